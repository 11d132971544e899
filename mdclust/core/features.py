"""Reading image features back, aligned with the image table."""

from __future__ import annotations

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
    vectors: np.ndarray  # (n, d) float32, unit rows, in image-table order
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


def load_image_features(store: Store, model: str | None = None) -> ImageFeatures:
    """The features of every image in image-table order, as unit float32 rows. The float16
    matrix on disk is read block by block into the result, so memory peaks at the result
    plus one block (1M x 512: 2.0 GB, not the 5 GB of reading it whole first)."""
    key = resolve_model_key(store, model)
    with store.snapshot() as snap:
        paths = snap.read_strings(layout.IMAGE_PATHS)
        shas = snap.read_strings(layout.IMAGES + "/sha256")
        stored = snap.read_strings(layout.features(key) + "/sha256")
        index = {s: i for i, s in enumerate(stored)}
        missing = [p for p, s in zip(paths, shas) if s not in index]
        if missing:
            raise MdclustError(f"{len(missing)} images have no {key} features (e.g. "
                               f"{missing[0]}); rerun `mdclust embed` with that model")
        rows = np.array([index[s] for s in shas], dtype=np.int64)
        del index, stored
        # where each stored row goes (a content shared by several paths: its last one)
        dest = np.full(snap.shape(layout.features(key) + "/vectors")[0], -1, dtype=np.int64)
        dest[rows] = np.arange(len(rows))
        vectors = np.empty((len(rows), snap.shape(layout.features(key) + "/vectors")[1]),
                           dtype=np.float32)
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
    return ConcatRows(feats.vectors, check_finite(group["text_counterpart"], "text counterparts",
                                                  str(store.path)))  # [E; V], read in blocks
