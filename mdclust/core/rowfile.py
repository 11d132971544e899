"""A numeric matrix kept on disk while it is computed, written and read in blocks of rows.

For outputs that would not fit in memory beside what computes them: Multi-DProxy's fused
features and proxies at 1M × 512 are 2 GB of float32 each, on top of the method's 2 GB of
per-image parameters (docs/benchmarks.md). The store takes one in place of an array
(core/store.py) and copies it a block at a time. The file has no name: it is gone when it is
closed or when the process dies, so a killed run leaves nothing behind.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np


class RowFile:
    """``shape``/``dtype`` like an array; ``rf[i:j] = block`` writes rows, ``rf[i:j]`` reads
    them; ``len``, ``ndim``, ``size``, ``itemsize`` and ``nbytes`` as numpy's."""

    def __init__(self, shape: tuple[int, ...], dtype=np.float32, folder=None):
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.ndim = len(self.shape)
        self.size = int(np.prod(self.shape))
        self.itemsize = self.dtype.itemsize
        self.nbytes = self.size * self.itemsize
        self._row = self.itemsize * int(np.prod(self.shape[1:]))
        self._file = tempfile.TemporaryFile(dir=None if folder is None else os.fspath(folder))
        self._file.truncate(self.nbytes)

    def __len__(self) -> int:
        return self.shape[0]

    def _rows(self, key) -> tuple[int, int]:
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("a RowFile is read and written by contiguous row slices")
        start, stop, _ = key.indices(self.shape[0])
        return start, max(start, stop)

    def __setitem__(self, key, block) -> None:
        i, j = self._rows(key)
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if block.shape != (j - i, *self.shape[1:]):
            raise ValueError(f"block of shape {block.shape} for rows {i}:{j} of {self.shape}")
        self._file.seek(i * self._row)
        self._file.write(memoryview(block).cast("B"))

    def __getitem__(self, key) -> np.ndarray:
        i, j = self._rows(key)
        out = np.empty((j - i, *self.shape[1:]), dtype=self.dtype)
        self._file.seek(i * self._row)
        view = memoryview(out).cast("B")
        got = 0
        while got < len(view):
            n = self._file.readinto(view[got:])
            if not n:
                raise OSError(f"short read from a row file: {got} of {len(view)} bytes")
            got += n
        return out

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "RowFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
