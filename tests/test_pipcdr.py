import shutil
import subprocess

import numpy as np
import pytest
import torch
from conftest import MDCLUST, TINY, embedded_store
from sklearn.metrics import normalized_mutual_info_score as nmi

from mdclust.core import layout
from mdclust.core.errors import MdclustError
from mdclust.core.store import Store
from mdclust.methods import pipcdr as pc
from mdclust.methods.baselines import kmeans, spherical_kmeans
from mdclust.methods.pipcdr_config import PipcdrConfig
from mdclust.stages.cluster import cluster
from mdclust.stages.embed import embed
from mdclust.stages.train import train


def mixture(n_per=60, k=4, d=16, spread=0.35, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d))
    X = np.vstack([c + spread * rng.normal(size=(n_per, d)) for c in centres])
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X.astype(np.float32), np.repeat(np.arange(k), n_per)


def test_ema_update_moves_target_towards_online():
    torch.manual_seed(0)
    model = pc.PIPCDR(8, hidden=16, out=4)
    for p in model.encoder.parameters():
        p.data.add_(1.0)  # online and target now differ
    online = [p.clone() for p in model.encoder.parameters()]
    before = [p.clone() for p in model.target_encoder.parameters()]
    model.ema_update(0.9)
    for o, b, t in zip(online, before, model.target_encoder.parameters()):
        torch.testing.assert_close(t, 0.9 * b + 0.1 * o)
    assert not any(p.requires_grad for p in model.target_encoder.parameters())
    model.ema_update(0.0)
    for o, t in zip(model.encoder.parameters(), model.target_encoder.parameters()):
        torch.testing.assert_close(t, o)


def test_cdr_terms_measure_dispersion_and_compactness():
    labels = torch.tensor([0, 0, 1, 1])
    tight = torch.tensor([[1.0, 0], [1, 0], [0, 1], [0, 1]])
    disp_t, comp_t = pc.cdr_loss(tight, labels, tight, labels, 2, tau=0.5)
    assert float(comp_t) == pytest.approx(0.0, abs=1e-6)
    collapsed = torch.tensor([[1.0, 0], [1, 0], [1, 0.01], [1, 0.01]])
    disp_c, _ = pc.cdr_loss(collapsed, labels, collapsed, labels, 2, tau=0.5)
    assert float(disp_t) < float(disp_c) - 0.5  # separated prototypes score lower
    loose = torch.tensor([[1.0, 0.5], [1, -0.5], [0.5, 1], [-0.5, 1]])
    _, comp_l = pc.cdr_loss(loose, labels, loose, labels, 2, tau=0.5)
    assert float(comp_l) > 0.05


def test_pip_loss_is_zero_for_a_perfect_predictor_without_noise():
    model = pc.PIPCDR(4, hidden=8, out=4)
    z = torch.randn(5, 4)

    class Identity(torch.nn.Module):
        def forward(self, x):
            return x

    model.predictor = Identity()
    t = torch.nn.functional.normalize(z, dim=-1)
    assert float(pc.pip_loss(model, z, t, sigma=0.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(pc.pip_loss(model, z, -t, sigma=0.0)) == pytest.approx(4.0, abs=1e-5)
    assert float(pc.pip_loss(model, z, t, sigma=0.5)) > 0.01


def test_losses_decrease_and_clusters_emerge_on_a_toy_mixture():
    X, y = mixture()
    tr = pc.Trainer(X, 4, epochs=25, batch=64, seed=0, hidden=64, out=32)
    while tr.epoch < tr.epochs:
        tr.epoch_step()
    c = tr.curves
    assert len(c["loss"]) == 25
    for name in ("loss", "pip", "compact"):
        assert np.mean(c[name][-3:]) < 0.7 * np.mean(c[name][:3]), name
    assert np.mean(c["dispersion"][-3:]) < np.mean(c["dispersion"][:3])
    assert nmi(y, kmeans(tr.features(), 4, seed=0)) > 0.9


def test_refreshed_labels_keep_cluster_ids():
    old = np.array([0, 0, 1, 1, 2, 2, 2])
    new = np.array([2, 2, 0, 0, 1, 1, 0])  # same clusters renamed, one point moved
    np.testing.assert_array_equal(pc.match_labels(new, old, 3), [0, 0, 1, 1, 2, 2, 1])


def test_pseudo_labels_are_refreshed_on_schedule():
    X, _ = mixture(n_per=30)
    tr = pc.Trainer(X, 4, epochs=6, batch=40, kmeans_every=3, seed=1, hidden=32, out=16)
    before = tr.model.embed(tr.X).numpy()
    tr.epoch_step()  # epoch 0 starts with the first M-step on the untrained target features
    np.testing.assert_array_equal(tr.labels.numpy(), spherical_kmeans(before, 4, seed=1,
                                                                      n_init=3))
    tr.epoch_step()
    tr.epoch_step()
    before, previous = tr.model.embed(tr.X).numpy(), tr.labels.numpy()
    tr.epoch_step()
    np.testing.assert_array_equal(tr.labels.numpy(), pc.match_labels(
        spherical_kmeans(before, 4, seed=4, n_init=3), previous, 4))
    tr.epoch_step()
    tr.epoch_step()
    rel = tr.curves["relabelled"]
    assert rel[0] == 1.0 and rel[1] == rel[2] == rel[4] == rel[5] == 0.0
    stale = tr.labels.clone()
    stale[::4] = (stale[::4] + 1) % 4  # a quarter of the points in a wrong cluster
    tr.labels = stale.clone()
    changed = tr.refresh_labels()
    assert changed == pytest.approx(float((stale != tr.labels).float().mean()))
    assert changed == pytest.approx(0.25, abs=0.05)


@pytest.fixture
def store(tmp_path):
    st = embedded_store(tmp_path, 24)
    return st


def cfg(**kw):
    base = dict(k=3, epochs=6, batch=8, checkpoint_every=2, hidden=32, out=16, queue=64)
    base.update(kw)
    return PipcdrConfig(**base)


def test_default_makes_the_image_views_it_needs(store, tmp_path):
    res = train(store, None, method="pipcdr", config=cfg(), device="cpu")
    assert res.augmentation == "stored views crop+flip x8 (made now: none were stored)"
    g = store.read_group(layout.views(f"{TINY}@random", "crop+flip"))
    assert g["vectors"].shape == (24, 8, 64)
    again = train(store, None, method="pipcdr", config=cfg(), device="cpu")
    assert again.augmentation == "stored views crop+flip x8"  # made once, then reused


def test_train_cluster_without_interest(store, tmp_path):
    (tmp_path / "imgs").rename(tmp_path / "moved")  # no images to make views from
    res = train(store, None, method="pipcdr", config=cfg(), device="cpu")
    assert res.interest is None and res.augmentation.startswith("feature-space")
    assert store.read_group(layout.views(f"{TINY}@random", "crop+flip")) is None
    g = store.read_group(layout.trained(None, "pipcdr"))
    assert g["features"].shape == (24, 32)
    np.testing.assert_allclose(np.linalg.norm(g["features"], axis=1), 1.0, atol=1e-5)
    assert len(g["curve_loss"]) == 6 and g.attrs["params"]["augmentation"] == res.augmentation
    assert sorted(set(g["pseudo_label"].tolist())) == [0, 1, 2]
    out = cluster(store, method="pipcdr", k=3)
    assert out.interest is None and sum(out.sizes) == 24
    assert not any(store.path.parent.glob("s.h5.checkpoints/*.pt"))


def test_interrupted_run_resumes_to_the_same_result(store, tmp_path):
    other = Store(tmp_path / "copy.h5")
    shutil.copy(store.path, other.path)
    train(other, None, method="pipcdr", config=cfg(), device="cpu")
    stopped = train(store, None, method="pipcdr", config=cfg(), device="cpu", stop_after=3)
    assert stopped.final_loss == 0.0 and store.read_group("train/pipcdr") is None
    resumed = train(store, None, method="pipcdr", config=cfg(), device="cpu")
    assert resumed.resumed_from == 2
    a = other.read_group("train/pipcdr")
    b = store.read_group("train/pipcdr")
    np.testing.assert_allclose(a["features"], b["features"], atol=1e-5)
    np.testing.assert_allclose(a["curve_loss"], b["curve_loss"], rtol=1e-5)


def test_embed_views_are_stored_deterministic_and_used(store, tmp_path):
    folder = tmp_path / "imgs"
    res = embed(folder, store, model=TINY, pretrained="random", workers=0, views=3,
                augment="crop,flip")
    assert res.embedded == 0 and res.views_embedded == 24
    g = store.read_group(layout.views(f"{TINY}@random", "crop+flip"))
    assert g["vectors"].shape == (24, 3, 64) and g.attrs["views"] == 3
    feats = store.read_group(f"features/{TINY}@random")
    plain = dict(zip(feats["sha256"], feats["vectors"].astype(np.float32)))
    V = g["vectors"].astype(np.float32)
    gap = [np.abs(V[i, j] - plain[s]).max() for i, s in enumerate(g["sha256"]) for j in range(3)]
    assert min(gap) > 1e-3  # the views are not the plain features
    again = embed(folder, store, model=TINY, pretrained="random", workers=0, views=3,
                  augment="crop,flip")
    assert again.views_embedded == 0 and not again.model_loaded
    fresh = Store(tmp_path / "fresh.h5")
    embed(folder, fresh, model=TINY, pretrained="random", workers=0, views=3,
          augment="crop,flip")
    g2 = fresh.read_group(layout.views(f"{TINY}@random", "crop+flip"))
    order = {s: i for i, s in enumerate(g2["sha256"])}
    np.testing.assert_array_equal(V, g2["vectors"][[order[s] for s in g["sha256"]]])

    sorted(folder.rglob("*.png"))[0].unlink()
    embed(folder, store, model=TINY, pretrained="random", workers=0)  # views=0 keeps the set
    assert store.read_group(layout.views(f"{TINY}@random", "crop+flip"))["vectors"].shape \
        == (23, 3, 64)
    res = train(store, None, method="pipcdr", config=cfg(), device="cpu")
    assert res.augmentation == "stored views crop+flip x3"


def test_features_of_another_clustering(store):
    cluster(store, "shade", method="kmeans", k=3)
    res = train(store, None, method="pipcdr", config=cfg(features="shade:kmeans"), device="cpu")
    assert res.interest == "shade" and "not of shade:kmeans" in res.augmentation
    assert store.read_group(layout.trained("shade", "pipcdr"))["features"].shape == (24, 32)
    with pytest.raises(MdclustError, match="--features images only"):
        train(store, None, method="pipcdr", config=cfg(features="shade:kmeans", views="crop"),
              device="cpu")


def test_bad_input_leaves_the_store_unchanged(store, tmp_path):
    before = store.path.read_bytes()
    for kw, message in [(dict(k=30), "more than the number of images"),
                        (dict(k=1), "at least 2"),
                        (dict(views="crop,rotate"), "no crop\\+rotate views"),
                        (dict(features="shade:multidproxy"), "no trained multidproxy"),
                        (dict(features="shade:gradnorm"), "no gradnorm clustering"),
                        (dict(features="shade"), "INTEREST:METHOD"),
                        (dict(features="shade:pipcdr"), "own output"),
                        (dict(ema=1.0), "--ema"),
                        (dict(epochs=0), "--epochs")]:
        with pytest.raises(MdclustError, match=message):
            train(store, None, method="pipcdr", config=cfg(**kw), device="cpu")
    with pytest.raises(MdclustError, match="--k-max must be at least 2"):
        train(store, None, method="pipcdr", config=cfg(k=None), k_max=1, device="cpu")
    with pytest.raises(MdclustError, match="unknown augmentation"):
        embed(tmp_path / "imgs", store, model=TINY, pretrained="random", views=2,
              augment="crop,sepia")
    assert store.path.read_bytes() == before
    out = subprocess.run([MDCLUST, "train", "--method", "pipcdr", "--k", "99", "--store",
                          str(store.path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip().splitlines() == [
        "mdclust: error: --k 99 is more than the number of images (24)"]
    assert store.path.read_bytes() == before
