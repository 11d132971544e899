import json
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest
import torch
from conftest import MDCLUST, embedded_store

from mdclust.core import layout
from mdclust.core.errors import MdclustError
from mdclust.core.store import Store
from mdclust.methods import multidproxy as mdp
from mdclust.methods import multidproxy_net as net
from mdclust.stages.candidates import candidates
from mdclust.stages.candidates.wordnet import all_nouns
from mdclust.stages.train import TrainConfig, train


def test_module_shapes_gates_and_lambda_in_range():
    torch.manual_seed(0)
    d, n = 32, 10
    model = net.MultiDProxy(n, d, np.ones(d) / np.sqrt(d), layers=2)
    C = torch.nn.functional.normalize(torch.randn(7, d), dim=-1)
    idx = torch.arange(6)
    w = model.proxies(idx, C)
    assert w.shape == (6, d)
    f, lam = model(torch.nn.functional.normalize(torch.randn(6, d), dim=-1), C[0], w)
    assert f.shape == (6, d) and lam.shape == (6, 1)
    assert bool(((lam >= 0) & (lam <= 1)).all())
    for layer in model.layers:
        for g in layer.last_gates:
            assert g.shape[-1] == d and bool(((g >= 0) & (g <= 1)).all())
    assert float(model.tau.detach()) == pytest.approx(0.1)
    full = net.fused_features(model, torch.randn(6, d), C[0], C, np.arange(6), chunk=4)
    assert full.shape == (6, d)


def test_schedules():
    E = 1000
    assert mdp.alpha_schedule(0, E) == pytest.approx(0.1)
    assert mdp.alpha_schedule(E / 2, E) == pytest.approx(0.3)
    assert mdp.alpha_schedule(E, E) == pytest.approx(0.5)
    assert mdp.beta_schedule(0, E) == pytest.approx(0.0)
    assert mdp.beta_schedule(E / 2, E) == pytest.approx(0.1)
    assert mdp.beta_schedule(E, E) == pytest.approx(0.2)


def test_refinement_sizes_halve_to_m():
    assert mdp.initial_candidate_count(3) == 96
    assert mdp.refinement_sizes(96, 3, 5) == [48, 24, 12, 6, 3]
    assert mdp.refinement_sizes(20, 6, 5) == [10, 6, 6, 6, 6]


def test_refinement_epochs_keep_r_and_train_the_final_set():
    assert mdp.refinement_epochs(1000, 200, "end") == [200, 400, 600, 800, 1000]
    assert mdp.refinement_epochs(1000, 200, "mid") == [100, 300, 500, 700, 900]
    assert mdp.refinement_epochs(40, 8) == [4, 12, 20, 28, 36]


def test_lc_sums_over_every_other_sample_in_the_batch():
    """Eq. 7 by hand on a batch of three: L_c = 1/B sum_i log sum_{j != i} exp(f_i.w_j / s)."""
    f = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]])  # normalised inside
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    C = torch.eye(2)
    base = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])  # one argmax group for all
    fn = [np.array(r) / np.linalg.norm(r) for r in f.tolist()]
    wn = [np.array(r) for r in w.tolist()]
    s = 0.5
    hand = np.mean([np.log(sum(np.exp(fn[i] @ wn[j] / s) for j in range(3) if j != i))
                    for i in range(3)])
    out = net.losses(f, f, w, C, base, sigma=s)
    assert float(out["c"]) == pytest.approx(hand, abs=1e-6)
    # the 0.1 reading (other argmax groups only) has no negatives here, so no signal at all
    assert float(net.losses(f, f, w, C, base, sigma=s, negatives="groups")["c"]) == 0.0


def test_identity_text_side_keeps_the_clip_geometry_at_start():
    torch.manual_seed(0)
    d = 16
    C = torch.nn.functional.normalize(torch.randn(5, d), dim=-1)
    t = torch.nn.functional.normalize(torch.randn(d), dim=0)
    model = net.MultiDProxy(4, d, C[0].numpy(), text_side="identity")
    T = model.text_tokens(t, C)
    np.testing.assert_allclose(T.detach().numpy(), C.numpy(), atol=1e-6)  # t*_i = w_i
    np.testing.assert_allclose((T @ T.T).detach().numpy(), (C @ C.T).numpy(), atol=1e-6)
    scrambled = net.MultiDProxy(4, d, C[0].numpy(), text_side="linear").text_tokens(t, C)
    cos = torch.nn.functional.normalize(scrambled.detach(), dim=-1)
    assert float((cos @ cos.T - C @ C.T).abs().max()) > 0.1  # a random projection does not


def test_reference_attention_equals_full_attention_for_small_sets():
    torch.manual_seed(1)
    d, n = 16, 12
    v = torch.nn.functional.normalize(torch.randn(n, d), dim=-1)
    C = torch.nn.functional.normalize(torch.randn(6, d), dim=-1)
    model = net.MultiDProxy(n, d, C[0].numpy(), layers=2).eval()
    with torch.no_grad():
        model.base_proxies.add_(torch.randn(n, d))  # proxies that differ per image
        w = model.proxies(torch.arange(n), C)
        full, _ = model(v, C[0], w)  # every image attends over all n
    chunked = net.fused_features(model, v, C[0], C, np.arange(n), chunk=5)
    np.testing.assert_allclose(chunked, full.numpy(), atol=1e-5)
    sampled = net.fused_features(model, v, C[0], C, mdp.reference_index(n, 6, 0), chunk=5)
    assert np.abs(sampled - full.numpy()).max() > 1e-4  # 6 keys are not all 12
    assert mdp.reference_index(n, 20, 0).tolist() == list(range(n))
    assert len(set(mdp.reference_index(1000, 64, 3).tolist())) == 64


def test_refine_candidates_keeps_the_aligned_words():
    rng = np.random.default_rng(0)
    C = rng.normal(size=(8, 16))
    C /= np.linalg.norm(C, axis=1, keepdims=True)
    proxies = np.vstack([C[0] + 0.01 * rng.normal(size=(20, 16)),
                         C[1] + 0.01 * rng.normal(size=(20, 16))])
    keep = mdp.refine_candidates(proxies, C, 2, 2, score="max")
    assert keep.tolist() == [0, 1]
    assert len(mdp.refine_candidates(proxies, C, 4, 2)) == 4


def test_auto_refinement_score_discounts_hubs_for_wordnet_lists_only(tmp_path):
    assert mdp.candidate_score_for("auto", "wordnet") == "specific"
    assert [mdp.candidate_score_for("auto", s) for s in ("file", "llm", None)] == ["max"] * 3
    assert mdp.candidate_score_for("mean", "wordnet") == "mean"  # a given score is kept
    # a word near every centroid (a hub) beats the words of single centroids under max,
    # and loses to them under specific
    axes = np.eye(4)
    proxies = np.vstack([axes[0]] * 10 + [axes[1]] * 10)
    hub = (axes[0] + axes[1]) / np.sqrt(2) * 0.999 + axes[2] * 0.045
    C = np.vstack([axes[0] * 0.7 + axes[3] * 0.714, axes[1] * 0.7 + axes[3] * 0.714, hub])
    assert mdp.refine_candidates(proxies, C, 2, 2, score="max").tolist() == [0, 2]
    assert mdp.refine_candidates(proxies, C, 2, 2, score="specific").tolist() == [0, 1]
    assert mdp.refine_candidates(proxies, C, 2, 2, score="auto").tolist() == \
        mdp.refine_candidates(proxies, C, 2, 2, score="max").tolist()
    # the stage resolves auto by the candidates' source and stores what it used
    st = embedded_store(tmp_path, 30)
    candidates(st, "color", source="wordnet", k=3)
    train(st, "color", config=cfg(epochs=8, refine_every=4), device="cpu")
    params = st.attrs(layout.trained("color", "multidproxy"))["params"]
    assert params["candidate_score"] == "specific"


@pytest.fixture
def small_store(tmp_path):
    st = embedded_store(tmp_path, 40)
    words = tmp_path / "w.txt"
    words.write_text("\n".join(all_nouns()[:96]))
    candidates(st, "thing", from_file=words, n=96)
    return st


def cfg(**kw):
    base = dict(k=3, epochs=40, refine_every=8, batch=16, checkpoint_every=5, lr=1e-2)
    base.update(kw)
    return TrainConfig(**base)


def test_training_halves_candidates_and_stores_everything(small_store):
    res = train(small_store, "thing", config=cfg(), device="cpu")
    assert res.candidates_start == 96 and len(res.candidates) == 3
    g = small_store.read_group(layout.trained("thing", "multidproxy"))
    rounds = np.asarray(g["history_round"])
    assert [int((rounds == r).sum()) for r in range(1, 6)] == [48, 24, 12, 6, 3]
    assert g["fused"].shape == (40, 64) and g["proxies"].shape == (40, 64)
    assert len(g["curve_loss"]) == 40
    # halvings after epochs 4, 12, 20, 28, 36 (R/2, 3R/2, ...): the final 3 words train 4 epochs
    sizes = np.asarray(g["curve_candidates"])
    assert sizes[[0, 4, 12, 20, 28, 35, 36, 39]].tolist() == [96, 48, 24, 12, 6, 6, 3, 3]
    assert g.attrs["params"]["epochs"] == 40
    assert not any(small_store.path.parent.glob("*.checkpoints/*.pt"))


def test_interrupted_run_resumes_to_the_same_result(small_store, tmp_path):
    other = Store(tmp_path / "copy.h5")
    shutil.copy(small_store.path, other.path)
    train(other, "thing", config=cfg(), device="cpu")
    stopped = train(small_store, "thing", config=cfg(), device="cpu", stop_after=12)
    assert stopped.final_loss == 0.0
    assert list(small_store.path.parent.glob("s.h5.checkpoints/*.pt"))
    resumed = train(small_store, "thing", config=cfg(), device="cpu")
    assert resumed.resumed_from == 10
    a = other.read_group(layout.trained("thing", "multidproxy"))
    b = small_store.read_group(layout.trained("thing", "multidproxy"))
    np.testing.assert_allclose(a["fused"], b["fused"], atol=1e-5)
    assert a["candidates"] == b["candidates"]


def test_restarts_keep_the_best_of_the_lowest_loss_runs(small_store, tmp_path):
    from mdclust.stages.train_multidproxy import LOSS_TIE, _silhouette

    res = train(small_store, "thing", config=cfg(restarts=3, seed=4), device="cpu")
    rows = res.restarts
    assert [r["seed"] for r in rows] == [4, 5, 6]
    assert len({r["silhouette"] for r in rows}) == 3  # the seeds really trained different models
    lowest = min(r["final_loss"] for r in rows)
    tied = [r for r in rows if r["final_loss"] <= lowest + LOSS_TIE * abs(lowest)]
    assert res.seed == max(tied, key=lambda r: r["silhouette"])["seed"]
    g = small_store.read_group(layout.trained("thing", "multidproxy"))
    assert g.attrs["params"]["chosen_seed"] == res.seed
    chosen = next(r for r in rows if r["seed"] == res.seed)
    assert _silhouette(np.asarray(g["fused"]), 3, 4) == pytest.approx(chosen["silhouette"],
                                                                      abs=1e-5)
    assert g["curve_loss"][-1] == pytest.approx(chosen["final_loss"], abs=1e-5)
    single = Store(tmp_path / "single.h5")
    shutil.copy(small_store.path, single.path)
    train(single, "thing", config=cfg(seed=res.seed), device="cpu")
    np.testing.assert_allclose(single.read_group(layout.trained("thing", "multidproxy"))["fused"],
                               g["fused"], atol=1e-5)
    assert not any(tmp_path.glob("*.checkpoints/*.pt"))


def test_pick_restart_prefers_low_loss_then_silhouette():
    from mdclust.stages.train_multidproxy import _pick_restart

    rows = [{"seed": s, "final_loss": loss, "silhouette": sil} for s, loss, sil in
            ((0, 1.72, 0.45), (1, 1.55, 0.39), (2, 1.551, 0.42), (3, 1.60, 0.90))]
    assert _pick_restart(rows)["seed"] == 2  # 0 and 3 are worse optima despite their silhouette
    assert _pick_restart(rows[:1])["seed"] == 0
    negative = [{"seed": 0, "final_loss": -2.0, "silhouette": 0.1},
                {"seed": 1, "final_loss": -1.99, "silhouette": 0.5}]
    assert _pick_restart(negative)["seed"] == 1  # within 1 % of a negative lowest loss


def test_silhouette_is_exact_below_the_sample_size_and_sampled_above(monkeypatch):
    import importlib

    from sklearn.metrics import silhouette_score

    train_mod = importlib.import_module("mdclust.stages.train_multidproxy")
    from mdclust.methods.baselines import kmeans

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 8)) + np.repeat(rng.normal(scale=3, size=(3, 8)), 100, axis=0)
    X = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)
    labels = kmeans(X, 3, seed=4)
    exact = silhouette_score(X, labels, metric="cosine")
    assert train_mod._silhouette(X, 3, 4) == pytest.approx(exact, abs=1e-6)
    monkeypatch.setattr(train_mod, "SILHOUETTE_SAMPLE", 50)
    sampled = train_mod._silhouette(X, 3, 4)
    rows = np.sort(np.random.default_rng(4).choice(300, 50, replace=False))  # seeded sample
    assert sampled == pytest.approx(silhouette_score(X[rows], labels[rows], metric="cosine"),
                                    abs=1e-6)
    assert sampled != pytest.approx(exact, abs=1e-4)  # scored on 50 rows, not all 300
    assert train_mod._silhouette(X, 3, 4) == sampled  # the sample is seeded


@pytest.mark.slow
def test_kill9_then_rerun_resumes(small_store, tmp_path):
    other = Store(tmp_path / "copy.h5")
    shutil.copy(small_store.path, other.path)
    args = ["--interest", "thing", "--k", "3", "--epochs", "400", "--refine-every", "80",
            "--batch", "16", "--checkpoint-every", "20", "--lr", "0.01", "--device", "cpu"]
    ref = train(other, "thing", config=cfg(epochs=400, refine_every=80, checkpoint_every=20),
                device="cpu")
    proc = subprocess.Popen([MDCLUST, "train", *args, "--store", str(small_store.path),
                             "--quiet"])
    folder = small_store.path.with_name("s.h5.checkpoints")
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not list(folder.glob("*.pt")):
        time.sleep(0.02)
    assert proc.poll() is None, "training ended before it could be killed"
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    out = subprocess.run([MDCLUST, "train", *args, "--store", str(small_store.path), "--json"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["resumed_from"] > 0 and res["candidates"] == ref.candidates
    a = other.read_group(layout.trained("thing", "multidproxy"))["fused"]
    b = small_store.read_group(layout.trained("thing", "multidproxy"))["fused"]
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_bad_input(small_store, tmp_path):
    before = small_store.path.read_bytes()
    few = tmp_path / "few.txt"
    few.write_text("red\nblue\n")
    candidates(small_store, "two", from_file=few, encode=False)
    before = small_store.path.read_bytes()
    with pytest.raises(MdclustError, match="more than the number of candidates"):
        train(small_store, "two", config=cfg(k=3), device="cpu")
    with pytest.raises(MdclustError, match="more than the number of images"):
        train(small_store, "thing", config=cfg(k=50), device="cpu")
    with pytest.raises(MdclustError, match="no candidates for interest 'mood'"):
        train(small_store, "mood", config=cfg(), device="cpu")
    with pytest.raises(MdclustError, match="at least 2"):
        train(small_store, "thing", config=cfg(k=1), device="cpu")
    with pytest.raises(MdclustError, match="--restarts must be >= 1"):
        train(small_store, "thing", config=cfg(restarts=0), device="cpu")
    with pytest.raises(MdclustError, match="unknown training method"):
        train(small_store, "thing", method="dino", config=cfg(), device="cpu")
    assert small_store.path.read_bytes() == before
    empty = Store(tmp_path / "nofeatures.h5")
    candidates(empty, "thing", source="wordnet", encode=False)
    with pytest.raises(MdclustError, match="holds no image features"):
        train(empty, "thing", config=cfg(), device="cpu")


@pytest.mark.slow
def test_cli_defaults_are_the_config_defaults_and_preset_paper_is_literal(small_store):
    from dataclasses import asdict

    from mdclust.methods.multidproxy import PAPER, MultiDProxyConfig

    base = ["train", "--interest", "thing", "--k", "3", "--epochs", "8", "--refine-every", "4",
            "--batch", "16", "--device", "cpu", "--store", str(small_store.path), "--quiet"]
    for extra, expected in (([], {}), (["--preset", "paper"], PAPER),
                            (["--preset", "paper", "--lr", "0.05"], {**PAPER, "lr": 0.05})):
        out = subprocess.run([MDCLUST, *base, *extra], capture_output=True, text=True,
                             timeout=300)
        assert out.returncode == 0, out.stderr
        params = small_store.attrs(layout.trained("thing", "multidproxy"))["params"]
        want = asdict(MultiDProxyConfig(k=3, epochs=8, refine_every=4, batch=16, **expected))
        # auto is stored as what it meant for these candidates (a file: max)
        want["candidate_score"] = mdp.candidate_score_for(want["candidate_score"], "file")
        assert {f: params[f] for f in want} == want
    bad = subprocess.run([MDCLUST, *base, "--preset", "literal"], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "--preset must be one of recommended, paper" in bad.stderr
