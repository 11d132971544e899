"""Interest-free k-means and the zero-shot CLIP baseline (CLIP_GPT in shared/papers/001)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ZERO_SHOT_TEMPLATE = "A photo of a {}."  # CLIP's prompt form (shared/papers/001, CLIP_GPT)


@dataclass
class KMeansConfig:
    """k-means on image features: k-means++ seeding, 10 initialisations (scikit-learn's
    classic default, kept for the papers' baselines), Euclidean or spherical (cosine)."""

    k: int
    seed: int = 0
    spherical: bool = False
    n_init: int = 10


@dataclass
class ZeroShotConfig:
    """Zero-shot CLIP: each image to its most similar candidate's text feature."""

    k: int
    template: str = ZERO_SHOT_TEMPLATE


def kmeans(X: np.ndarray, k: int, seed: int = 0, spherical: bool = False,
           n_init: int = 10, max_iter: int = 300) -> np.ndarray:
    """Labels of k-means (scikit-learn, k-means++); ``spherical`` clusters by cosine."""
    if spherical:
        return spherical_kmeans(X, k, seed=seed, n_init=n_init, max_iter=max_iter)
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=k, n_init=n_init, max_iter=max_iter,
                  random_state=seed).fit_predict(np.asarray(X, dtype=np.float32))


def spherical_kmeans(X: np.ndarray, k: int, seed: int = 0, n_init: int = 10,
                     max_iter: int = 300) -> np.ndarray:
    """k-means on the unit sphere: assign by cosine, centroids are normalised means.

    Seeded by k-means++ on the normalised rows; the run with the highest total cosine wins.
    """
    from sklearn.cluster import kmeans_plusplus

    X = np.asarray(X, dtype=np.float32)
    X = X / np.linalg.norm(X, axis=1, keepdims=True).clip(min=1e-12)
    rng = np.random.RandomState(seed)
    best, best_obj = None, -np.inf
    for _ in range(n_init):
        C, _ = kmeans_plusplus(X, k, random_state=rng)
        labels = None
        for _ in range(max_iter):
            new = (X @ C.T).argmax(1)
            if labels is not None and np.array_equal(new, labels):
                break
            labels = new
            for j in range(k):
                members = X[labels == j]
                c = members.sum(0) if len(members) else X[rng.randint(len(X))]
                C[j] = c / max(np.linalg.norm(c), 1e-12)
        obj = float((X * C[labels]).sum())
        if obj > best_obj:
            best, best_obj = labels, obj
    return best


def zero_shot(E: np.ndarray, T: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Assign each image to its most similar candidate; with more candidates in use than k,
    keep the k candidates chosen by most images as class names and assign again among them.

    Returns (labels in [0, k'), indices of the candidates that name the clusters), k' <= k.
    """
    first = (E @ T.T).argmax(1)
    used, counts = np.unique(first, return_counts=True)
    if len(used) > k:
        order = np.lexsort((used, -counts))  # most used first, ties by candidate order
        used = np.sort(used[order[:k]])
    labels = (E @ T[used].T).argmax(1)
    return labels, used
