import numpy as np
import pytest
import torch

from mdclust.core.metrics import scores
from mdclust.methods import gradnorm as gn
from mdclust.methods.baselines import kmeans, spherical_kmeans, zero_shot


def unit(x, axis=-1):
    return x / np.linalg.norm(x, axis=axis, keepdims=True)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_closed_form_score_is_the_squared_gradient_norm(seed):
    rng = np.random.default_rng(seed)
    d, C, m = 32, 7, 25
    R = unit(rng.normal(size=(m, d)))
    W = unit(rng.normal(size=(d, C)), axis=0)
    closed, assign = gn.noun_scores(R, W, "gradnorm", gn.TAU)
    for i in range(m):
        Wt = torch.tensor(W, requires_grad=True)
        logits = gn.TAU * torch.tensor(R[i]) @ Wt
        target = int(torch.argmax(logits))  # argmin of the loss = argmax of pi
        loss = torch.nn.functional.cross_entropy(logits[None], torch.tensor([target]))
        (grad,) = torch.autograd.grad(loss, Wt)
        assert closed[i] == pytest.approx(float((grad ** 2).sum()), rel=1e-5, abs=1e-5)
        assert assign[i] == target


def test_special_cases_msp_and_cosine():
    rng = np.random.default_rng(3)
    R = unit(rng.normal(size=(40, 16)))
    W = unit(rng.normal(size=(16, 5)), axis=0)
    pi = gn.softmax(gn.TAU * R @ W)
    msp, a1 = gn.noun_scores(R, W, "msp")
    np.testing.assert_allclose(msp, (1 - pi.max(1)) ** 2)
    cos, a2 = gn.noun_scores(R, W, "cosine")
    np.testing.assert_allclose(-cos, (R @ W).max(1))
    np.testing.assert_array_equal(a1, a2)  # Eq. (14): same argmax
    with pytest.raises(ValueError):
        gn.noun_scores(R, W, "nope")


def test_select_keeps_beta_lowest_per_class():
    scores_ = np.array([5.0, 1.0, 3.0, 2.0, 9.0, 0.5, 7.0])
    assign = np.array([0, 0, 0, 0, 1, 1, 2])
    assert gn.select(scores_, assign, beta=2).tolist() == [1, 3, 4, 5, 6]


def test_pseudo_class_rule():
    assert gn.n_pseudo_classes(600, 6) == 18  # average 100 per cluster -> 3K
    assert gn.n_pseudo_classes(60_000, 10) == 100  # average 6000 -> N / 600
    assert gn.n_pseudo_classes(10, 6) == 10  # never more classes than images


def test_text_counterpart_matches_the_formula():
    rng = np.random.default_rng(4)
    E = unit(rng.normal(size=(9, 8)))
    R = unit(rng.normal(size=(5, 8)))
    V = gn.text_counterpart(E, R, kappa=0.05, chunk=4)
    for i in range(9):
        w = np.exp(E[i] @ R.T / 0.05)
        np.testing.assert_allclose(V[i], (w / w.sum()) @ R, rtol=1e-5, atol=1e-6)


def test_cosine_classifier_learns_the_pseudo_labels():
    rng = np.random.default_rng(5)
    centers = unit(rng.normal(size=(4, 16)))
    y = rng.integers(0, 4, 400)
    E = unit(centers[y] + 0.3 * rng.normal(size=(400, 16)))
    W, curve = gn.train_cosine_classifier(E, y, 4, epochs=30, min_steps=2000, seed=0)
    assert curve[-1] < 0.5 * curve[0]
    np.testing.assert_allclose(np.linalg.norm(W, axis=0), 1, atol=1e-6)
    assert ((E @ W).argmax(1) == y).mean() > 0.95


def blobs(seed=6, k=4, n=300, d=12, noise=0.15):
    rng = np.random.default_rng(seed)
    centers = unit(rng.normal(size=(k, d)))
    y = rng.integers(0, k, n)
    return unit(centers[y] + noise * rng.normal(size=(n, d))), y, centers


def test_kmeans_and_spherical_kmeans_recover_blobs():
    X, y, _ = blobs()
    assert scores(y, kmeans(X, 4, seed=0))["nmi"] > 0.95
    assert scores(y, spherical_kmeans(X, 4, seed=0))["nmi"] > 0.95
    np.testing.assert_array_equal(spherical_kmeans(X, 4, seed=1), spherical_kmeans(X, 4, seed=1))


def test_zero_shot_merges_to_the_k_most_used_candidates():
    X, y, centers = blobs(k=3, noise=0.05)
    rng = np.random.default_rng(0)
    T = np.vstack([centers, unit(rng.normal(size=(5, 12)))])  # 3 true names + 5 distractors
    labels, used = zero_shot(X, T, 3)
    assert sorted(used.tolist()) == [0, 1, 2]
    assert scores(y, labels)["nmi"] > 0.95


def test_the_filter_samples_above_the_threshold_and_caps_the_classes():
    from mdclust.methods.gradnorm import SAMPLE_PER_CLASS, sampled

    assert sampled(50_000, 83, 60_000) == (None, 83)  # below: the paper as written
    assert sampled(10**6, 1667, None) == (None, 1667)  # --sample all
    rows, C = sampled(10**6, 1667, 60_000, seed=3, k=10)
    assert len(rows) == len(set(rows.tolist())) == 60_000 and C == 60_000 // SAMPLE_PER_CLASS
    assert list(rows) == sorted(rows) and (rows == sampled(10**6, 1667, 60_000, 3, 10)[0]).all()
    assert sampled(100_000, 167, 60_000, k=10)[1] == 167  # the paper's C kept where it fits
    assert sampled(10**6, 1667, 60_000, k=100)[1] == 300  # never below TAC's 3K


def test_a_sampled_filter_keeps_nearly_the_nouns_of_the_full_one(tmp_path):
    """A store of 3,000 images in 6 groups and 120 nouns, 24 of them near the groups: scored
    on a 1,500-image sample (C = 3K = 18, as on all of them: 1,500 / 300 = 5 is below TAC's
    floor), the filter keeps the group nouns as the full one does."""
    import mdclust
    from mdclust.core.store import Store
    from mdclust.core.textcache import DEFAULT_TEMPLATE, _group

    rng = np.random.default_rng(0)
    centres = unit(rng.normal(size=(6, 32)))
    X = unit(centres[rng.integers(0, 6, 3000)] + 0.3 * rng.normal(size=(3000, 32)))
    near = unit(np.repeat(centres, 4, axis=0) + 0.2 * rng.normal(size=(24, 32)))
    nouns = unit(np.vstack([near, rng.normal(size=(96, 32))]))
    words = [f"w{i}" for i in range(len(nouns))]
    st = Store(tmp_path / "s.h5")
    shas = [f"{i:064x}" for i in range(3000)]
    with st.transaction() as txn:
        txn.put_group("images", {"path": [f"{i}.png" for i in range(3000)], "sha256": shas,
                                 "size": np.zeros(3000, np.int64), "mtime": np.zeros(3000)},
                      {"root": str(tmp_path)})
        txn.put_group("features/t@random", {"sha256": shas, "vectors": X.astype(np.float16)},
                      {"model": "t", "pretrained": "random", "weights_sha256": "", "dim": 32})
        txn.put_group(_group("t@random", DEFAULT_TEMPLATE),
                      {"text": words, "vectors": nouns.astype(np.float16)},
                      {"template": DEFAULT_TEMPLATE})
        txn.put_group("interests/g/candidates", {"word": words}, {"k": 6, "source": "file"})
    full = mdclust.filter_nouns(st, "g", sample=None, beta=4)
    part = mdclust.filter_nouns(st, "g", sample=1500, beta=4)
    assert full.sampled == 0 and full.classes == 18
    assert part.sampled == 1500 and part.classes == 18
    group_nouns = set(words[:24])
    assert len(set(part.selected) & group_nouns) >= 0.8 * len(set(full.selected) & group_nouns)
    from mdclust.core import layout

    assert set(part.selected) <= set(words)
    assert st.attrs(layout.filtered("g", "gradnorm"))["params"]["sample"] == 1500
