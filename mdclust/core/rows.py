"""A row-wise concatenation of matrices that is never held whole.

LaIC clusters [E; V] (image features beside their text counterparts). At a million rows that
matrix is 4 GB in float32; k-means needs only a sample of it to train and blocks of it to
assign, so ``ConcatRows`` hands out exactly those, and materialises only when asked to
(``np.asarray``, for scikit-learn on small data).
"""

from __future__ import annotations

import numpy as np


class ConcatRows:
    """Rows of ``np.hstack(parts)`` in float32, built on demand from the parts' rows."""

    def __init__(self, *parts: np.ndarray):
        if len({len(p) for p in parts}) != 1:
            raise ValueError("every part needs the same number of rows")
        self.parts = parts
        self.shape = (len(parts[0]), sum(p.shape[1] for p in parts))
        self.dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows) -> np.ndarray:
        """A slice or an index array of rows, as one float32 array."""
        out = np.empty((len(range(*rows.indices(len(self)))) if isinstance(rows, slice)
                        else len(rows), self.shape[1]), dtype=np.float32)
        col = 0
        for p in self.parts:
            out[:, col:col + p.shape[1]] = p[rows]
            col += p.shape[1]
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype, copy=False)


BLOCK = 65_536  # rows per block in the helpers below


def nearest_to_means(X, rows: np.ndarray, groups: np.ndarray, n_groups: int,
                     top: int) -> list[np.ndarray]:
    """For each group g, the ``top`` entries of ``rows`` in group g whose rows of ``X`` lie
    nearest (by dot product) to the group's mean row, best first, ties in ``rows`` order.

    Two passes over ``X`` in blocks of its rows (an array, a ConcatRows or the store's
    StoredRows), whatever the groups: the report's exemplars per cluster and per cell of a
    cross-tabulation, which indexing ``X`` per group would read once per group (at 10M
    images and 100 clusters, the whole matrix a hundred times)."""
    rows, groups = np.asarray(rows, dtype=np.int64), np.asarray(groups, dtype=np.int64)
    position = np.argsort(rows, kind="stable")  # visit X's rows in order
    d = X.shape[1]
    sums = np.zeros((n_groups, d), dtype=np.float64)
    from scipy.sparse import csr_matrix

    for i in range(0, len(rows), BLOCK):
        at = position[i:i + BLOCK]
        # a one-hot (groups x rows) product sums each group's rows (np.add.at is ~20x slower)
        onehot = csr_matrix((np.ones(len(at)), (groups[at], np.arange(len(at)))),
                            shape=(n_groups, len(at)))
        sums += onehot @ X[rows[at]].astype(np.float64)
    counts = np.bincount(groups, minlength=n_groups)
    means = (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)
    score = np.empty(len(rows), dtype=np.float32)
    for i in range(0, len(rows), BLOCK):
        at = position[i:i + BLOCK]
        score[at] = np.einsum("ij,ij->i", X[rows[at]], means[groups[at]])
    order = np.lexsort((np.arange(len(rows)), -score, groups))
    starts = np.searchsorted(groups[order], np.arange(n_groups))
    return [rows[order[s:s + min(top, counts[g])]] for g, s in enumerate(starts)]
