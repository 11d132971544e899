"""Hubness correction: each word's similarities taken relative to its median over the images.

A long, uncurated word list (WordNet's hyponyms of an interest: other senses, rare forms such
as "purpleness" or "dithered colour") holds words that a text encoder places near every image,
so every image's nearest word is one of them. Subtracting each word's median cosine over the
collection before any argmax or softmax over words leaves the words that stand out for some
images only (the cross-modal retrieval remedy of CSLS and querybank normalisation; the median
rather than the mean, so that a word is not discounted for the images it really describes).
docs/methods/hubness.md has the dev measurements behind the rule and the `auto` default.
"""

from __future__ import annotations

import numpy as np

CHOICES = ("auto", "none", "median")
ROWS = 10_000  # images the medians are taken over (a sample past that many)
SEED = 0  # the sample's: the medians describe the collection, not one run's seed
WORD_CHUNK = 2048  # words per median pass: rows x chunk floats at a time


def resolve(hubness: str, source: str | None) -> str:
    """What ``hubness`` means for words from ``source`` (the candidates' source, or
    "wordnet-all" for the paper's pool): auto is median for `--source wordnet` lists only."""
    from mdclust.core.errors import BadInput

    if hubness not in CHOICES:
        raise BadInput(f"unknown --hubness {hubness!r}: use {', '.join(CHOICES)}")
    if hubness == "auto":
        return "median" if source == "wordnet" else "none"
    return hubness


def similarities(X: np.ndarray, T: np.ndarray, shift: np.ndarray | None) -> np.ndarray:
    """Cosines of the rows of ``X`` with the words ``T``, less each word's ``shift``."""
    S = X @ T.T
    return S if shift is None else S - shift


def word_medians(E, T: np.ndarray, how: str, rows: int = ROWS) -> np.ndarray | None:
    """Per word of ``T`` the value to subtract from its cosines (None for "none"): its median
    cosine over the images ``E`` (array or stored rows; a seeded sample past ``rows``, which
    at 10M stored images reads most of the file once)."""
    if how == "none":
        return None
    n = len(E)
    take = np.arange(n) if n <= rows else \
        np.sort(np.random.default_rng(SEED).choice(n, rows, replace=False))
    X = np.asarray(E[take], dtype=np.float32)
    T = np.asarray(T, dtype=np.float32)
    return np.concatenate([np.median(X @ T[i:i + WORD_CHUNK].T, axis=0)
                           for i in range(0, len(T), WORD_CHUNK)]) if len(T) else \
        np.zeros(0, np.float32)
