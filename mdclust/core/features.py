"""Reading image features back, aligned with the image table."""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from mdclust.core import layout
from mdclust.core.errors import MdclustError, StaleResult
from mdclust.core.rows import ConcatRows
from mdclust.core.store import Store, check_finite

FEATURE_BLOCK = 65_536  # rows read at a time (64 MB of float16 at 512-d)


@dataclass
class ImageFeatures:
    key: str
    paths: list[str]
    vectors: np.ndarray  # (n, d) float32, unit rows, in image-table order (or StoredRows)
    shas: list[str]  # content hash of each row's image


def model_keys(store: Store) -> list[str]:
    return store.children("features")


def resolve_model_key(store: Store, model: str | None = None) -> str:
    """Pick the feature set to use: the only one, or the one ``model`` names (key or model name)."""
    keys = model_keys(store)
    if not keys:
        raise MdclustError(f"store {store.path} holds no image features; run `mdclust embed` first")
    if model is None:
        if len(keys) == 1:
            return keys[0]
        raise MdclustError("the store holds features of several models; choose one with --model: "
                           + ", ".join(keys))
    if model in keys:
        return model
    matches = [k for k in keys if k.split("@", 1)[0] == model.replace("/", "--")]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise MdclustError(f"--model {model} matches several feature sets: {', '.join(matches)}")
    raise MdclustError(
        f"no features for model {model!r} in {store.path}; stored: {', '.join(keys)}")


# Above this many bytes of float32 features (2M images at 512-d), stages read them from the
# store block by block (StoredRows) instead of holding them: 10M x 512 would be 20 GB.
IN_MEMORY_BYTES_ENV = "MDCLUST_FEATURES_IN_MEMORY_GB"
IN_MEMORY_BYTES = 4 * 2 ** 30


def in_memory_limit() -> float:
    raw = os.environ.get(IN_MEMORY_BYTES_ENV)
    if not raw:
        return IN_MEMORY_BYTES
    try:
        return float(raw) * 2 ** 30
    except ValueError:
        raise MdclustError(f"${IN_MEMORY_BYTES_ENV} must be a number of GB, not {raw!r}") \
            from None


class StoredRows:
    """A store's image features in image-table order as unit float32 rows, read from the
    store when asked for: ``X[a:b]`` and ``X[index array]`` read only the stored blocks that
    hold those rows, so memory stays one block (64 MB) plus what the caller keeps, at any N.
    It has the interface core.rows.ConcatRows has (len, shape, dtype, rows by slice or index
    array, ``np.asarray`` for the whole), which k-means, zero-shot, the text counterparts and
    the naming already take. Holds its own read handle on the store's files (a commit
    replaces files by renaming, so the handle keeps reading what it opened)."""

    def __init__(self, store: Store, dataset: str, rows: np.ndarray | None = None,
                 normalise: bool = True, what: str = "features"):
        """Rows ``rows`` (the stored row of each image; None: all, in order) of the 2-D
        ``dataset``; ``normalise`` scales them to unit length, as image features are used."""
        import h5py

        self.what, self.where, self._normalise = what, str(store.path), normalise
        self._file = h5py.File(store.path, "r")
        self._ds = self._file[dataset]
        self._rows = np.arange(self._ds.shape[0]) if rows is None else rows
        self._cached: tuple[int, np.ndarray | None] = (-1, None)
        self.shape = (len(self._rows), int(self._ds.shape[1]))
        self.dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return self.shape[0]

    def _block(self, start: int) -> np.ndarray:
        """Stored rows [start, start + FEATURE_BLOCK) as float16; the last one read is kept,
        since callers walk the rows in slices smaller than a block (text counterparts: 8,192)."""
        if self._cached[0] != start:
            self._cached = (start, self._ds[start:start + FEATURE_BLOCK])
        return self._cached[1]

    def _stored(self, stored: np.ndarray) -> np.ndarray:
        """Rows ``stored`` of the dataset (any order, repeats allowed), normalised float32:
        each stored block that holds any of them is read once (a sample of 3,000 rows of 10M
        reads nearly every block; HDF5's column-thin chunks make scattered reads far worse)."""
        out = np.empty((len(stored), self.shape[1]), dtype=np.float32)
        block_of = stored // FEATURE_BLOCK
        for b in np.unique(block_of):
            hit = block_of == b
            start = int(b) * FEATURE_BLOCK
            out[hit] = self._block(start)[stored[hit] - start]
        check_finite(out, self.what, self.where)
        if self._normalise:
            out /= np.linalg.norm(out, axis=1, keepdims=True).clip(min=1e-12)
        return out

    def __getitem__(self, rows) -> np.ndarray:
        if isinstance(rows, slice):
            return self._stored(self._rows[rows])
        if isinstance(rows, (int, np.integer)):
            return self._stored(self._rows[[rows]])[0]
        return self._stored(self._rows[np.asarray(rows)])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = np.empty(self.shape, dtype=np.float32)
        for i in range(0, len(self), FEATURE_BLOCK):
            out[i:i + FEATURE_BLOCK] = self[i:i + FEATURE_BLOCK]
        return out if dtype is None else out.astype(dtype, copy=False)


_REUSE: dict | None = None  # inside shared_features(): (store file, key) -> (digest, features)


@contextmanager
def shared_features():
    """Inside the block, load_image_features hands back the features it read before for the
    same store and model as long as the images and the stored features are the same (their
    sha256 lists are compared on every call): a command that runs several methods reads the
    vectors once (2 GB at 1M images) instead of once per method. Outside it nothing is kept."""
    global _REUSE
    outer = _REUSE
    _REUSE = {} if outer is None else outer
    try:
        yield
    finally:
        _REUSE = outer


def load_image_features(store: Store, model: str | None = None,
                        stream: bool | None = None) -> ImageFeatures:
    """The features of every image in image-table order, as unit float32 rows. The float16
    matrix on disk is read block by block into the result, so memory peaks at the result
    plus one block (1M x 512: 2.0 GB, not the 5 GB of reading it whole first). Past
    IN_MEMORY_BYTES (or with ``stream``) ``vectors`` is a StoredRows that reads blocks
    when asked instead (10M x 512: no 20 GB). Inside ``shared_features()`` a second call
    for the same unchanged features returns the first call's result."""
    key = resolve_model_key(store, model)
    with store.snapshot() as snap:
        paths = snap.read_strings(layout.IMAGE_PATHS)
        shas = snap.read_strings(layout.IMAGES + "/sha256")
        stored = snap.read_strings(layout.features(key) + "/sha256")
        memo = (str(store.path), key)
        stamp = None if _REUSE is None else _digest(paths, shas, stored)
        if stamp is not None:
            old = _REUSE.pop(memo, None)  # a stale entry is not held while the new one is read
            if old is not None and old[0] == stamp:
                _REUSE[memo] = old
                return old[1]
        feats = _read(snap, store, key, paths, shas, stored, stream)
    if stamp is not None:
        if isinstance(feats.vectors, np.ndarray):  # shared by the next method: not for writing
            feats.vectors.flags.writeable = False
        _REUSE[memo] = (stamp, feats)
    return feats


def _digest(*lists: list[str], chunk: int = 100_000) -> bytes:
    """One hash of string lists, taken in chunks (10M sha256 strings are about 1 GB; one
    joined copy of them would be as much again)."""
    import hashlib

    h = hashlib.sha256()
    for items in lists:
        h.update(f"{len(items)}\0".encode())
        for i in range(0, len(items), chunk):
            h.update("\0".join(items[i:i + chunk]).encode() + b"\0")
    return h.digest()


def _read(snap, store: Store, key: str, paths: list[str], shas: list[str], stored: list[str],
          stream: bool | None) -> ImageFeatures:
    index = {s: i for i, s in enumerate(stored)}
    rows = np.fromiter((index.get(s, -1) for s in shas), dtype=np.int64, count=len(shas))
    del index
    if (rows < 0).any():
        missing = [p for p, r in zip(paths, rows) if r < 0]
        raise MdclustError(f"{len(missing)} images have no {key} features (e.g. "
                           f"{missing[0]}); rerun `mdclust embed` with that model")
    shape = snap.shape(layout.features(key) + "/vectors")
    if stream is None:
        stream = len(rows) * shape[1] * 4 > in_memory_limit()
    if stream:
        return ImageFeatures(key, paths, StoredRows(
            store, layout.features(key) + "/vectors", rows, what=f"features {key}"), shas)
    # where each stored row goes (a content shared by several paths: its last one)
    dest = np.full(shape[0], -1, dtype=np.int64)
    dest[rows] = np.arange(len(rows))
    vectors = np.empty((len(rows), shape[1]), dtype=np.float32)
    for start, block in snap.chunks(layout.features(key) + "/vectors", FEATURE_BLOCK):
        to = dest[start:start + len(block)]
        keep = to >= 0
        part = check_finite(block[keep].astype(np.float32), f"features {key}",
                            snap.file_of(layout.features(key)))
        part /= np.linalg.norm(part, axis=1, keepdims=True).clip(min=1e-12)
        vectors[to[keep]] = part
    copies = dest[rows] != np.arange(len(rows))
    if copies.any():  # duplicates of one content: copy its row
        vectors[copies] = vectors[dest[rows[copies]]]
    return ImageFeatures(key, paths, vectors, shas)


def clustering_features(store, group,
                        feats: ImageFeatures | None = None) -> np.ndarray | ConcatRows | None:
    """The features a clustering was computed from, in its row order (None: labels only);
    LaIC's [E; V] as a ConcatRows (np.asarray makes it an array). ``feats``: the image
    features of the clustering's model when the caller holds them already (2 GB at 1M
    images, not read twice)."""
    kind = group.attrs["params"].get("features", "none")
    if kind == "none":
        return None
    if "features" in group.data:
        return check_finite(np.asarray(group["features"], dtype=np.float32), "features",
                            str(store.path))
    key = group.attrs["params"]["model_key"]
    if feats is None or feats.key != key:
        feats = load_image_features(store, key)
    if feats.paths != list(group["path"]):
        raise StaleResult("the images changed since this clustering was made; "
                          "run `mdclust cluster` again")
    if kind == "image":
        return feats.vectors
    if kind == "trained":
        interest_name = group.attrs["params"].get("interest")
        return layout.read_trained(store, interest_name, group.attrs["method"])[1]
    V = group.data.get("text_counterpart")
    if V is None:  # not read with the group: read it now, or in blocks where E is read so
        path = layout.clustering(group.attrs["params"].get("interest"), group.attrs["method"])
        if isinstance(feats.vectors, StoredRows):
            return ConcatRows(feats.vectors, StoredRows(store, path + "/text_counterpart",
                                                        normalise=False,
                                                        what="text counterparts"))
        V = store.read_group(path, ("text_counterpart",))["text_counterpart"]
    return ConcatRows(feats.vectors, check_finite(V, "text counterparts",
                                                  str(store.path)))  # [E; V], read in blocks
