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
