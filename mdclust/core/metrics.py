"""Clustering metrics used by the papers: NMI, ARI, ACC (Hungarian matching) and RI."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def _codes(labels: Sequence) -> np.ndarray:
    """Labels as codes 0..m-1 (the metrics do not depend on which code a label gets)."""
    if isinstance(labels, np.ndarray) and labels.dtype.kind in "iub":
        # cluster labels and codes already: no detour through strings (a 10M-row sort of
        # strings per call, five calls per scored run)
        return np.unique(labels, return_inverse=True)[1].reshape(-1)
    return np.unique(np.asarray(labels, dtype=object).astype(str), return_inverse=True)[1]


def codes(labels: Sequence) -> np.ndarray:
    """Ground truth coded once, for scoring many clusterings against it."""
    return _codes(labels)


def accuracy(truth: Sequence, pred: Sequence) -> float:
    """Best one-to-one matching of clusters to classes (Hungarian); unmatched clusters count as
    errors, so more clusters than classes cannot reach 1.0."""
    from scipy.optimize import linear_sum_assignment

    t, p = _codes(truth), _codes(pred)
    if len(t) != len(p):
        raise ValueError("truth and prediction differ in length")
    if len(t) == 0:
        return 0.0
    table = np.zeros((p.max() + 1, t.max() + 1), dtype=np.int64)
    np.add.at(table, (p, t), 1)
    rows, cols = linear_sum_assignment(-table)
    return float(table[rows, cols].sum() / len(t))


def rand_index(truth: Sequence, pred: Sequence) -> float:
    """Fraction of pairs on which the two partitions agree (together or apart)."""
    t, p = _codes(truth), _codes(pred)
    n = len(t)
    if n < 2:
        return 1.0
    table = np.zeros((p.max() + 1, t.max() + 1), dtype=np.int64)
    np.add.at(table, (p, t), 1)
    comb = lambda x: (x * (x - 1) // 2).sum()  # noqa: E731
    same_both = comb(table)
    same_p, same_t = comb(table.sum(1)), comb(table.sum(0))
    total = n * (n - 1) // 2
    return float((total + 2 * same_both - same_p - same_t) / total)


def scores(truth: Sequence, pred: Sequence) -> dict[str, float]:
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    t, p = _codes(truth), _codes(pred)
    return {"nmi": float(normalized_mutual_info_score(t, p)),
            "ari": float(adjusted_rand_score(t, p)),
            "acc": accuracy(t, p), "ri": rand_index(t, p)}
