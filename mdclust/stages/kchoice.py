"""The k a stage uses: the one given, the one given to `candidates`, else chosen
(methods/kselect.py: by the images' votes over the interest's words for interest-driven
methods, by k-means silhouette for interest-free ones)."""

from __future__ import annotations

import numpy as np

from mdclust.core import layout
from mdclust.core.errors import BadInput
from mdclust.core.textcache import DEFAULT_TEMPLATE, text_features
from mdclust.methods import hubness as hub
from mdclust.methods.kselect import KChoice, by_features, by_votes


def _check(k: int, n: int, flag: str = "--k") -> int:
    if k < 2:
        raise BadInput(f"{flag} must be at least 2")
    if k > n:
        raise BadInput(f"{flag} {k} is more than the number of images ({n})")
    return int(k)


def given(store, interest: str | None, k: int | None, n: int) -> KChoice | None:
    """The k the user gave (here, or to `candidates` for the interest); None for auto."""
    if k is not None:
        return KChoice(_check(k, n), "given")
    stored = layout.candidates_k(store, interest)
    if stored:
        return KChoice(_check(int(stored), n), "stored")
    return None


def for_interest(store, interest: str, k: int | None, n: int, E: np.ndarray, model_key: str,
                 *, k_max: int | None = None, words: list[str] | None = None,
                 source: str | None = None, template: str = DEFAULT_TEMPLATE, seed: int = 0,
                 hubness: str = "auto") -> KChoice:
    """Interest-driven methods: given k, else the images' votes over the interest's words
    (its candidates and their source unless ``words`` and ``source`` are given), hubs
    corrected as ``hubness`` says for that source (methods/hubness.py)."""
    if k_max is not None:  # a bad bound is bad input even where k is given
        _check(k_max, n, "--k-max")
    fixed = given(store, interest, k, n)
    if fixed is not None:
        return fixed
    if words is None:
        words = layout.read_candidates(store, interest)
        source = layout.candidates_source(store, interest)
    if len(words) < 2:
        raise BadInput(f"the interest {interest!r} has {len(words)} candidate word; k cannot "
                       "be chosen from fewer than two: give --k or more candidates")
    T = np.asarray(text_features(store, words, template, model=model_key), dtype=np.float32)
    return by_votes(E, T, k_max, seed, hub.resolve(hubness, source))


def for_features(store, interest: str | None, k: int | None, X, *,
                 k_max: int | None = None, seed: int = 0) -> KChoice:
    """Interest-free methods: given k, else the best k-means silhouette on ``X``."""
    if k_max is not None:
        _check(k_max, len(X), "--k-max")
    fixed = given(store, interest, k, len(X))
    if fixed is not None:
        return fixed
    return by_features(X, k_max, seed)
