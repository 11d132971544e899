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
