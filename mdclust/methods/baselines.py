"""Interest-free k-means and the zero-shot CLIP baseline (CLIP_GPT in shared/papers/001)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mdclust.methods.hubness import similarities

ZERO_SHOT_TEMPLATE = "A photo of a {}."  # CLIP's prompt form (shared/papers/001, CLIP_GPT)


@dataclass
class KMeansConfig:
    """k-means on image features: k-means++ seeding, 10 initialisations (scikit-learn's
    classic default, kept for the papers' baselines), Euclidean or spherical (cosine)."""

    k: int
    seed: int = 0
    spherical: bool = False
    n_init: int = 10
    backend: str = "auto"  # auto, sklearn or faiss (BACKENDS)


@dataclass
class ZeroShotConfig:
    """Zero-shot CLIP: each image to its most similar candidate's text feature."""

    k: int
    template: str = ZERO_SHOT_TEMPLATE


BACKENDS = ("auto", "sklearn", "faiss")
# auto: faiss from this many rows. Below it scikit-learn is fast enough and its results are the
# ones every figure before 0.2 was measured with; docs/benchmarks.md has the crossover.
FAISS_MIN_ROWS = 20_000
FAISS_NITER = 25  # faiss' default: Lloyd iterations per initialisation (it has no tolerance)
FAISS_POINTS_PER_CENTROID = 256  # faiss trains on at most k x this many rows (seeded sample)
ASSIGN_CHUNK = 65_536  # rows assigned per search: bounded memory at any N


def backend_for(backend: str, n: int) -> str:
    if backend not in BACKENDS:
        from mdclust.core.errors import BadInput

        raise BadInput(f"--backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if backend != "auto":
        return backend
    return "faiss" if n >= FAISS_MIN_ROWS else "sklearn"


def kmeans(X, k: int, seed: int = 0, spherical: bool = False,
           n_init: int = 10, max_iter: int = 300, backend: str = "auto") -> np.ndarray:
    """Labels of k-means with ``n_init`` initialisations seeded by ``seed``, the best kept;
    ``spherical`` clusters by cosine. Backend: scikit-learn (k-means++, Lloyd to convergence)
    or faiss (random initialisation, FAISS_NITER iterations on a seeded sample of
    FAISS_POINTS_PER_CENTROID x k rows, then every row assigned); auto picks faiss from
    FAISS_MIN_ROWS rows. ``X`` is an array or a core.rows.ConcatRows, which faiss reads
    in blocks and scikit-learn materialises."""
    if backend_for(backend, len(X)) == "faiss":
        return faiss_kmeans(X, k, seed=seed, spherical=spherical, n_init=n_init,
                            max_iter=max_iter)
    if spherical:
        return spherical_kmeans(X, k, seed=seed, n_init=n_init, max_iter=max_iter)
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=k, n_init=n_init, max_iter=max_iter,
                  random_state=seed).fit_predict(np.asarray(X, dtype=np.float32))


def _draw(n: int, size: int, seed: int) -> np.ndarray | slice:
    # The sample is ours, not faiss': the same rows whether X is an array or built on demand.
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False)) if n > size \
        else slice(None)


def _trained_index(sample: np.ndarray, k: int, seed: int, spherical: bool, n_init: int,
                   max_iter: int):
    import faiss

    km = faiss.Kmeans(sample.shape[1], k, niter=min(max_iter, FAISS_NITER), nredo=n_init,
                      seed=seed, spherical=spherical, verbose=False,
                      max_points_per_centroid=FAISS_POINTS_PER_CENTROID)
    km.train(np.ascontiguousarray(sample, dtype=np.float32))
    return km.index


def _assign(X, indexes) -> list[np.ndarray]:
    """Each row's nearest centroid under each index, one pass over ``X`` in blocks."""
    labels = [np.empty(len(X), dtype=np.int64) for _ in indexes]
    for i in range(0, len(X), ASSIGN_CHUNK):
        block = np.ascontiguousarray(X[i:i + ASSIGN_CHUNK], dtype=np.float32)
        for out, index in zip(labels, indexes):
            out[i:i + ASSIGN_CHUNK] = index.search(block, 1)[1][:, 0]
    return labels


def faiss_kmeans(X, k: int, seed: int = 0, spherical: bool = False,
                 n_init: int = 10, max_iter: int = 300) -> np.ndarray:
    """``X``: an array, or anything that gives float32 rows for a slice or an index array
    (core.rows.ConcatRows): only the training sample and one block of rows are held at once."""
    rows = _draw(len(X), k * FAISS_POINTS_PER_CENTROID, seed)
    index = _trained_index(X[rows], k, seed, spherical, n_init, max_iter)
    return _assign(X, [index])[0]


SAMPLES_IN_MEMORY = 2 << 30  # bytes of all runs' training samples read in one pass, at most


def kmeans_runs(X, k: int, seeds, spherical: bool = False, n_init: int = 10,
                max_iter: int = 300, backend: str = "auto") -> list[np.ndarray]:
    """``[kmeans(X, k, seed=s, ...) for s in seeds]``, the same labels, but on faiss in two
    passes over ``X`` instead of two per run: every run's training sample is read at once,
    and every row block is assigned by all runs' centroids before the next is read. That is
    what makes `eval`'s 10 runs affordable when ``X`` is read from the store (10M rows: 10 GB
    per pass)."""
    seeds = list(seeds)
    n, size = len(X), k * FAISS_POINTS_PER_CENTROID
    if backend_for(backend, n) != "faiss" or len(seeds) < 2 or n <= size \
            or len(seeds) * size * X.shape[1] * 4 > SAMPLES_IN_MEMORY:
        return [kmeans(X, k, seed=s, spherical=spherical, n_init=n_init, max_iter=max_iter,
                       backend=backend) for s in seeds]
    draws = [_draw(n, size, s) for s in seeds]
    union = np.unique(np.concatenate(draws))
    rows = np.ascontiguousarray(X[union], dtype=np.float32)
    indexes = [_trained_index(rows[np.searchsorted(union, draw)], k, seed, spherical, n_init,
                              max_iter) for seed, draw in zip(seeds, draws)]
    del rows
    return _assign(X, indexes)


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


def zero_shot(E: np.ndarray, T: np.ndarray, k: int, chunk: int = ASSIGN_CHUNK,
              shift: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Assign each image to its most similar candidate; with more candidates in use than k,
    keep the k candidates chosen by most images as class names and assign again among them.

    Returns (labels in [0, k'), indices of the candidates that name the clusters), k' <= k.
    Works through ``E`` in chunks: memory stays (chunk x candidates) at any N. ``shift``: a
    value per candidate subtracted from its cosines (methods/hubness.py).
    """
    used = zero_shot_words(E, T, k, chunk, shift)
    return nearest_words(E, T[used], chunk, None if shift is None else shift[used]), used


def nearest_words(E, T: np.ndarray, chunk: int = ASSIGN_CHUNK,
                  shift: np.ndarray | None = None) -> np.ndarray:
    """Each row's most similar word (cosine less ``shift``), in chunks of rows."""
    return np.concatenate([similarities(E[i:i + chunk], T, shift).argmax(1)
                           for i in range(0, len(E), chunk)]) if len(E) else \
        np.zeros(0, dtype=np.int64)


def zero_shot_words(E, T: np.ndarray, k: int, chunk: int = ASSIGN_CHUNK,
                    shift: np.ndarray | None = None) -> np.ndarray:
    """The candidates zero-shot assigns among (indices, sorted): those some image prefers,
    at most the k chosen by most images. One pass over ``E``."""
    used, counts = np.unique(nearest_words(E, T, chunk, shift), return_counts=True)
    if len(used) > k:
        order = np.lexsort((used, -counts))  # most used first, ties by candidate order
        used = np.sort(used[order[:k]])
    return used


def name_clusters(E: np.ndarray, labels: np.ndarray, k: int, T: np.ndarray,
                  chunk: int = ASSIGN_CHUNK,
                  shift: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A word for each cluster: every image votes for its nearest word (cosine of its image
    feature to the words' text features ``T``, as zero-shot CLIP), and the k clusters get
    distinct words maximising the votes they hold (Hungarian assignment; with fewer words than
    clusters, each cluster its own most voted word). Votes, not the cosine of the cluster's
    mean feature, because CLIP's image and text features sit apart (the modality gap): a mean
    image vector's nearest word is often a generic one, while most members' nearest word is
    the right one (docs/report.md has the measurement).

    ``shift``: a value per word subtracted from its cosines before the vote (hubness.py).

    Returns (word index per cluster, share of the cluster's members voting for it)."""
    from scipy.optimize import linear_sum_assignment

    votes = nearest_words(E, T, chunk, shift)
    counts = np.zeros((k, len(T)), dtype=np.int64)
    np.add.at(counts, (np.asarray(labels), votes), 1)
    if len(T) >= k:
        rows, cols = linear_sum_assignment(-counts)
        pick = np.empty(k, dtype=np.int64)
        pick[rows] = cols
    else:
        pick = counts.argmax(1)
    sizes = counts.sum(1)
    share = counts[np.arange(k), pick] / np.maximum(sizes, 1)
    return pick, share
