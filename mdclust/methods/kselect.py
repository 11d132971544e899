"""Choosing k when the user does not give it (`--k auto`, the default; docs/k.md).

Two criteria, one per kind of method, both scored by a silhouette over k = 2 .. k_max:

- interest-free (kmeans, pipcdr): k-means on the features the method clusters, scored by the
  cosine silhouette of that k-means (Rousseeuw 1987);
- interest-driven (zeroshot, gradnorm, tac, sic, multidproxy): what only they have, the
  interest's words and how the images vote for them. Each image's vote is its softmax over the
  candidates' cosine similarities (CLIP's zero-shot probabilities); images that vote alike are
  one value, so words that share their images (synonyms, or words close in the text space)
  count once and words no image chooses count not at all. k-means on the square roots of the
  votes (the Hellinger embedding of a distribution), scored by the silhouette there.

The search runs on a seeded sample of at most SEARCH_ROWS images with a few k-means
initialisations, so it costs the same at 1M images as at 10,000. docs/k.md has the
measurements behind each choice (dev sets only).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mdclust.methods.hubness import similarities, word_medians

AUTO = "auto"
K_MAX = 20  # default upper end of the search where the candidates do not bound it lower
MIN_PER_CLUSTER = 5  # k_max is also at most n / this: no cluster of one or two images
SEARCH_ROWS = 3000  # images the search runs on (seeded sample)
SEARCH_INIT = 3  # k-means initialisations per k in the search
VOTE_TEMPERATURE = 0.03  # softer than CLIP's 0.01: synonyms share an image's vote (docs/k.md)
VOTE_SLACK = 0.02  # votes: the smallest k whose silhouette is within this of the best
SILHOUETTE_SAMPLE = 4096  # rows a silhouette is computed on (it is quadratic in rows)


WHERE = {"given": "given", "stored": "as given to candidates",
         "trained": "the trained method's own"}


@dataclass
class KChoice:
    """The k chosen and why: ``how`` is "given" (the user's --k), "stored" (the k given to
    `candidates`), "silhouette" (interest-free criterion) or "votes" (interest-driven);
    ``scores[k]`` the criterion for every k tried (empty when k was given)."""

    k: int
    how: str
    k_max: int = 0
    scores: dict[int, float] = field(default_factory=dict)
    rows: int = 0  # images the search ran on
    hubness: str = "none"  # votes: median when the words' cosines were taken less their medians

    def to_json(self) -> dict:
        out = {"k": self.k, "how": self.how, "k_max": self.k_max, "rows": self.rows,
               "scores": {str(k): round(v, 6) for k, v in self.scores.items()}}
        if self.hubness != "none":
            out["hubness"] = self.hubness
        return out

    def says(self) -> str:
        """One line for stderr: the k and how it was chosen."""
        if self.how in ("given", "stored", "trained") or self.k not in self.scores:
            return f"k = {self.k} ({WHERE.get(self.how, self.how)})"
        if self.how == "votes":
            rule = (f"the smallest k within {VOTE_SLACK} of the best silhouette of the "
                    "images' votes over the candidates"
                    + (", each word's median cosine taken off" if self.hubness == "median"
                       else ""))
        else:
            rule = "the best silhouette of k-means on the features"
        return (f"k = {self.k} chosen (auto: {rule}, k = 2..{self.k_max}; "
                f"{self.scores[self.k]:.3f} at {self.k})")


def parse_k(value, flag: str = "--k") -> int | None:
    """``--k``'s value: None for auto (the default), else a whole number of at least 2."""
    from mdclust.core.errors import BadInput

    if value is None or (isinstance(value, str) and value.strip().lower() == AUTO):
        return None
    try:
        k = int(value)
    except (TypeError, ValueError):
        raise BadInput(f"{flag} must be a whole number or 'auto', not {value!r}") from None
    if k < 2:
        raise BadInput(f"{flag} must be at least 2")
    return k


def silhouette(X, labels: np.ndarray, seed: int = 0, metric: str = "cosine",
               sample: int = SILHOUETTE_SAMPLE) -> float:
    """Silhouette of a clustering (cosine by default) on at most ``sample`` seeded rows
    (it is quadratic in rows); ``X`` an array or a core.rows.ConcatRows, of which only those
    rows are read. -1 for a single cluster."""
    from sklearn.metrics import silhouette_score

    labels = np.asarray(labels)
    if len(labels) > sample:
        rows = np.sort(np.random.default_rng(seed).choice(len(labels), sample, replace=False))
        X, labels = X[rows], labels[rows]
    if not 2 <= len(np.unique(labels)) < len(labels):
        return -1.0
    return float(silhouette_score(np.asarray(X, dtype=np.float32), labels, metric=metric))


def default_k_max(n: int, words: int | None = None) -> int:
    """The largest k searched: K_MAX, at most n / MIN_PER_CLUSTER images, and for an
    interest at most its number of candidate words (each value needs a word)."""
    top = min(K_MAX, max(2, n // MIN_PER_CLUSTER))
    if words is not None:
        top = min(top, words)
    return max(2, top)


def _sample(n: int, seed: int) -> np.ndarray:
    if n <= SEARCH_ROWS:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, SEARCH_ROWS, replace=False))


def _curve(X: np.ndarray, k_max: int, seed: int, metric: str) -> dict[int, float]:
    from sklearn.cluster import KMeans

    scores = {}
    for k in range(2, min(k_max, len(X) - 1) + 1):
        labels = KMeans(n_clusters=k, n_init=SEARCH_INIT, random_state=seed).fit_predict(X)
        scores[k] = silhouette(X, labels, seed, metric)
    return scores


def _best(scores: dict[int, float], slack: float = 0.0) -> int:
    """The smallest k scoring within ``slack`` of the best (ties to 6 places: the smaller)."""
    top = max(round(v, 6) for v in scores.values())
    return min(k for k, v in scores.items() if round(v, 6) >= top - slack)


def by_features(X, k_max: int | None = None, seed: int = 0) -> KChoice:
    """Interest-free: the k whose k-means on ``X`` has the best cosine silhouette."""
    n = len(X)
    k_max = k_max or default_k_max(n)
    rows = _sample(n, seed)
    S = np.asarray(X[rows], dtype=np.float32)
    scores = _curve(S, k_max, seed, "cosine")
    return KChoice(_best(scores), "silhouette", k_max, scores, len(rows))


def votes(E: np.ndarray, T: np.ndarray, temperature: float = VOTE_TEMPERATURE,
          shift: np.ndarray | None = None) -> np.ndarray:
    """Each image's zero-shot distribution over the words (rows of ``E`` and ``T`` unit;
    ``shift`` a value per word subtracted from its cosines, methods/hubness.py)."""
    Z = similarities(E, T, shift) / temperature
    Z -= Z.max(1, keepdims=True)
    P = np.exp(Z)
    return P / P.sum(1, keepdims=True)


def by_votes(E: np.ndarray, T: np.ndarray, k_max: int | None = None, seed: int = 0,
             hubness: str = "none") -> KChoice:
    """Interest-driven: the smallest k whose k-means on the images' votes over the words
    (Hellinger embedding) has a silhouette within VOTE_SLACK of the best; k_max at most the
    words some image prefers."""
    n = len(E)
    rows = _sample(n, seed)
    X, T = np.asarray(E[rows], dtype=np.float32), np.asarray(T, dtype=np.float32)
    # the medians of the rows already read: no second pass over a store at scale
    P = votes(X, T, shift=word_medians(X, T, hubness))
    chosen = len(np.unique(P.argmax(1)))
    top = default_k_max(n, len(T)) if k_max is None else k_max
    k_max = max(2, min(top, chosen)) if k_max is None else k_max
    scores = _curve(np.sqrt(P), k_max, seed, "euclidean")
    if not scores:
        return KChoice(2, "votes", k_max, {2: -1.0}, len(rows), hubness)
    return KChoice(_best(scores, VOTE_SLACK), "votes", k_max, scores, len(rows), hubness)
