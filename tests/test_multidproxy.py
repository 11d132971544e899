import json
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest
import torch
from conftest import MDCLUST, embedded_store

from mdclust.candidates import candidates
from mdclust.candidates.wordnet import all_nouns
from mdclust.errors import MdclustError
from mdclust.methods import multidproxy as mdp
from mdclust.store import Store
from mdclust.train import TrainConfig, group_path, train


def test_module_shapes_gates_and_lambda_in_range():
    torch.manual_seed(0)
    d, n = 32, 10
    model = mdp.MultiDProxy(n, d, np.ones(d) / np.sqrt(d), layers=2)
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
    full, _ = model.forward_full(torch.randn(6, d), C[0], w, chunk=4)
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


def test_refine_candidates_keeps_the_aligned_words():
    rng = np.random.default_rng(0)
    C = rng.normal(size=(8, 16))
    C /= np.linalg.norm(C, axis=1, keepdims=True)
    proxies = np.vstack([C[0] + 0.01 * rng.normal(size=(20, 16)),
                         C[1] + 0.01 * rng.normal(size=(20, 16))])
    keep = mdp.refine_candidates(proxies, C, 2, 2, score="max")
    assert keep.tolist() == [0, 1]
    assert len(mdp.refine_candidates(proxies, C, 4, 2)) == 4


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
    g = small_store.read_group(group_path("thing", "multidproxy"))
    rounds = np.asarray(g["history_round"])
    assert [int((rounds == r).sum()) for r in range(1, 6)] == [48, 24, 12, 6, 3]
    assert g["fused"].shape == (40, 64) and g["proxies"].shape == (40, 64)
    assert len(g["curve_loss"]) == 40 and g["curve_candidates"][-1] == 6
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
    a = other.read_group(group_path("thing", "multidproxy"))
    b = small_store.read_group(group_path("thing", "multidproxy"))
    np.testing.assert_allclose(a["fused"], b["fused"], atol=1e-5)
    assert a["candidates"] == b["candidates"]


def test_restarts_keep_the_best_of_the_lowest_loss_runs(small_store, tmp_path):
    from mdclust.train import LOSS_TIE, _silhouette

    res = train(small_store, "thing", config=cfg(restarts=3, seed=4), device="cpu")
    rows = res.restarts
    assert [r["seed"] for r in rows] == [4, 5, 6]
    assert len({r["silhouette"] for r in rows}) == 3  # the seeds really trained different models
    lowest = min(r["final_loss"] for r in rows)
    tied = [r for r in rows if r["final_loss"] <= lowest + LOSS_TIE * abs(lowest)]
    assert res.seed == max(tied, key=lambda r: r["silhouette"])["seed"]
    g = small_store.read_group(group_path("thing", "multidproxy"))
    assert g.attrs["params"]["chosen_seed"] == res.seed
    chosen = next(r for r in rows if r["seed"] == res.seed)
    assert _silhouette(np.asarray(g["fused"]), 3, 4) == pytest.approx(chosen["silhouette"],
                                                                      abs=1e-5)
    assert g["curve_loss"][-1] == pytest.approx(chosen["final_loss"], abs=1e-5)
    single = Store(tmp_path / "single.h5")
    shutil.copy(small_store.path, single.path)
    train(single, "thing", config=cfg(seed=res.seed), device="cpu")
    np.testing.assert_allclose(single.read_group(group_path("thing", "multidproxy"))["fused"],
                               g["fused"], atol=1e-5)
    assert not any(tmp_path.glob("*.checkpoints/*.pt"))


def test_pick_restart_prefers_low_loss_then_silhouette():
    from mdclust.train import _pick_restart

    rows = [{"seed": s, "final_loss": loss, "silhouette": sil} for s, loss, sil in
            ((0, 1.72, 0.45), (1, 1.55, 0.39), (2, 1.551, 0.42), (3, 1.60, 0.90))]
    assert _pick_restart(rows)["seed"] == 2  # 0 and 3 are worse optima despite their silhouette
    assert _pick_restart(rows[:1])["seed"] == 0
    negative = [{"seed": 0, "final_loss": -2.0, "silhouette": 0.1},
                {"seed": 1, "final_loss": -1.99, "silhouette": 0.5}]
    assert _pick_restart(negative)["seed"] == 1  # within 1 % of a negative lowest loss


def test_silhouette_is_exact_below_the_sample_size_and_sampled_above(monkeypatch):
    from sklearn.metrics import silhouette_score

    from mdclust import train as train_mod
    from mdclust.methods.baselines import kmeans

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 8)) + np.repeat(rng.normal(scale=3, size=(3, 8)), 100, axis=0)
    X = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)
    labels = kmeans(X, 3, seed=4)
    exact = silhouette_score(X, labels, metric="cosine")
    assert train_mod._silhouette(X, 3, 4) == pytest.approx(exact, abs=1e-6)
    monkeypatch.setattr(train_mod, "SILHOUETTE_SAMPLE", 50)
    sampled = train_mod._silhouette(X, 3, 4)
    assert sampled == pytest.approx(silhouette_score(X, labels, metric="cosine", sample_size=50,
                                                     random_state=4), abs=1e-6)
    assert sampled != pytest.approx(exact, abs=1e-6)  # scored on 50 rows, not all 300
    assert train_mod._silhouette(X, 3, 4) == sampled  # the sample is seeded


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
    a = other.read_group(group_path("thing", "multidproxy"))["fused"]
    b = small_store.read_group(group_path("thing", "multidproxy"))["fused"]
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
