"""Clustering metrics used by the papers: NMI, ARI, ACC (Hungarian matching) and RI."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def _codes(labels: Sequence) -> np.ndarray:
    """Labels as codes 0..m-1 (the metrics do not depend on which code a label gets)."""
    if isinstance(labels, np.ndarray) and labels.dtype.kind in "iub":
        # cluster labels and codes already: no detour through strings (a 10M-row sort of
        # strings per call, five calls per scored run), and no sort when they are small
        labels = labels.reshape(-1)
        if len(labels) and labels.min() >= 0 and labels.max() < 4 * len(labels) + 1024:
            present = np.bincount(labels) > 0
            return (np.cumsum(present) - 1)[labels]
        return np.unique(labels, return_inverse=True)[1].reshape(-1)
    return np.unique(np.asarray(labels, dtype=object).astype(str), return_inverse=True)[1]


def codes(labels: Sequence) -> np.ndarray:
    """Ground truth coded once, for scoring many clusterings against it."""
    return _codes(labels)


def _table(t: np.ndarray, p: np.ndarray) -> np.ndarray:
    """The (cluster x class) contingency table of two code arrays, by one bincount."""
    rows, cols = int(p.max()) + 1, int(t.max()) + 1
    return np.bincount(p.astype(np.int64) * cols + t, minlength=rows * cols).reshape(rows, cols)


def _accuracy(table: np.ndarray, n: int) -> float:
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(-table)
    return float(table[rows, cols].sum() / n)


def _rand_index(table: np.ndarray, n: int) -> float:
    if n < 2:
        return 1.0
    comb = lambda x: int((x * (x - 1) // 2).sum())  # noqa: E731
    same_both = comb(table)
    same_p, same_t = comb(table.sum(1)), comb(table.sum(0))
    total = n * (n - 1) // 2
    return float((total + 2 * same_both - same_p - same_t) / total)


def _entropy(counts: np.ndarray) -> float:
    """scikit-learn's label entropy, from the label counts."""
    counts = counts[counts > 0].astype(np.float64)
    total = counts.sum()
    return float(-np.sum((counts / total) * (np.log(counts) - np.log(total))))


def _nmi(table: np.ndarray) -> float:
    """scikit-learn's normalized_mutual_info_score (arithmetic mean), from the table."""
    from sklearn.metrics import mutual_info_score

    if (table.sum(1) > 0).sum() == (table.sum(0) > 0).sum() == 1:
        return 1.0
    mi = mutual_info_score(None, None, contingency=table)
    if mi == 0:
        return 0.0
    return float(mi / np.mean([_entropy(table.sum(0)), _entropy(table.sum(1))]))


def _ari(table: np.ndarray, n: int) -> float:
    """scikit-learn's adjusted_rand_score, from the table (its pair confusion matrix, in
    Python integers: at 10M rows the products pass 2^63)."""
    squares = int((table.astype(np.int64) ** 2).sum())
    in_p, in_t = table.sum(1).astype(np.int64), table.sum(0).astype(np.int64)
    tp = squares - n
    fp = int((table @ in_t).sum()) - squares  # pairs together in the clustering only
    fn = int((table.T @ in_p).sum()) - squares  # together in the truth only
    tn = n * n - fp - fn - squares
    if fn == 0 and fp == 0:
        return 1.0
    return float(2.0 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn)))


def accuracy(truth: Sequence, pred: Sequence) -> float:
    """Best one-to-one matching of clusters to classes (Hungarian); unmatched clusters count as
    errors, so more clusters than classes cannot reach 1.0."""
    t, p = _codes(truth), _codes(pred)
    if len(t) != len(p):
        raise ValueError("truth and prediction differ in length")
    if len(t) == 0:
        return 0.0
    return _accuracy(_table(t, p), len(t))


def rand_index(truth: Sequence, pred: Sequence) -> float:
    """Fraction of pairs on which the two partitions agree (together or apart)."""
    t, p = _codes(truth), _codes(pred)
    return _rand_index(_table(t, p), len(t)) if len(t) else 1.0


def scores(truth: Sequence, pred: Sequence) -> dict[str, float]:
    """NMI, ARI, ACC and RI from one contingency table (10M rows: under a second, where
    scikit-learn's functions build their own tables from the labels, one each)."""
    t, p = _codes(truth), _codes(pred)
    if len(t) != len(p):
        raise ValueError("truth and prediction differ in length")
    if len(t) == 0:
        return {"nmi": 1.0, "ari": 1.0, "acc": 0.0, "ri": 1.0}
    table, n = _table(t, p), len(t)
    return {"nmi": _nmi(table), "ari": _ari(table, n), "acc": _accuracy(table, n),
            "ri": _rand_index(table, n)}
