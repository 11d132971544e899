"""`mdclust embed --features PATH`: image features a user already has, imported instead of
computed — a `.npy` matrix with a paths file (txt, CSV or Parquet with a ``path`` or
``image_path`` column), or a clip-retrieval output folder (``img_emb/img_emb_N.npy`` beside
``metadata/metadata_N.parquet``, whose ``image_path`` column names the rows).

Everything is checked before anything is written (shape, dtype, finite rows, one path per
row, no duplicates, the dimension of the named model's text tower), so a bad file is one line
and the store is as it was. The images are recorded under the folder the paths share (or the
paths file's folder, for relative paths), each with a content id made from its path, since
the files are not read; the store is marked as imported, and a later `embed` of real files
into it is refused rather than mixed in.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np

from mdclust.core import layout
from mdclust.core.errors import BadInput, MdclustError
from mdclust.core.pathlists import read_paths
from mdclust.core.store import Store

IMPORTED = "imported"  # images' attribute: where the features came from


def content_id(path: str) -> str:
    """The stand-in for a content hash of an imported row: its file is not read."""
    return hashlib.sha256(("imported:" + path).encode("utf-8")).hexdigest()


def _shard_number(p: Path) -> int:
    m = re.search(r"(\d+)$", p.stem)
    return int(m.group(1)) if m else -1


def read_source(features: Path, paths: Path | None) -> tuple[np.ndarray, list[str], Path]:
    """(matrix, one path per row, the folder relative paths are resolved against)."""
    features = Path(features).expanduser()
    if features.is_dir():  # clip-retrieval's layout
        embs = sorted((features / "img_emb").glob("img_emb_*.npy"), key=_shard_number)
        if not embs:
            raise BadInput(f"{features} has no img_emb/img_emb_N.npy (clip-retrieval's "
                           "layout); give a .npy file and --paths instead")
        mats, names = [], []
        for emb in embs:
            meta = features / "metadata" / f"metadata_{_shard_number(emb)}.parquet"
            if not meta.is_file():
                raise BadInput(f"paths file not found: {meta} (for {emb.name})")
            mat, rows = _load(emb), read_paths(meta)
            _same_length(mat, rows, emb, meta)
            mats.append(mat)
            names += rows
        return np.concatenate(mats), names, features
    if not features.is_file():
        raise BadInput(f"features file not found: {features}")
    if paths is None:
        raise BadInput("--features FILE.npy needs --paths FILE (txt, CSV or Parquet): one "
                       "image path per row of the matrix")
    mat, rows = _load(features), read_paths(Path(paths))
    _same_length(mat, rows, features, paths)
    return mat, rows, Path(paths).expanduser().resolve().parent


def _load(path: Path) -> np.ndarray:
    try:
        mat = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise BadInput(f"{path} is not a NumPy .npy matrix: {str(exc).splitlines()[0]}") \
            from exc
    if mat.ndim != 2 or not mat.shape[0]:
        raise BadInput(f"{path} holds an array of shape {mat.shape}; features are (images, "
                       "dimension)")
    if not np.issubdtype(mat.dtype, np.floating):
        raise BadInput(f"{path} holds {mat.dtype} values; features are floating point")
    return mat


def _same_length(mat, rows, mat_path, rows_path) -> None:
    if len(rows) != len(mat):
        raise BadInput(f"{mat_path} has {len(mat)} rows but {rows_path} names {len(rows)} "
                       "paths; they must match row for row")


def _checked(mat: np.ndarray, rows: list[str], base: Path, dim: int | None, model: str):
    """Unit float16 features, the paths relative to their common folder, and that folder."""
    if dim is not None and mat.shape[1] != dim:
        raise BadInput(f"the features have dimension {mat.shape[1]} but {model}'s text tower "
                       f"has {dim}: import them under the model that made them (--model)")
    seen: dict[str, int] = {}
    absolute = []
    for i, p in enumerate(rows):
        if not p:
            raise BadInput(f"row {i} has an empty path")
        full = os.path.normpath(p if os.path.isabs(p) else os.path.join(base, p))
        if full in seen:
            raise BadInput(f"duplicate path {p!r} (rows {seen[full]} and {i}); each image "
                           "once")
        seen[full] = i
        absolute.append(full)
    out = np.empty(mat.shape, dtype=np.float16)
    for start in range(0, len(mat), 65_536):
        block = np.asarray(mat[start:start + 65_536], dtype=np.float32)
        bad = ~np.isfinite(block).all(1)
        norms = np.linalg.norm(block, axis=1)
        if bad.any() or (norms == 0).any():
            i = start + int(np.flatnonzero(bad | (norms == 0))[0])
            raise BadInput(f"feature row {i} ({rows[i]}) is "
                           + ("not finite (NaN or inf)" if bad[i - start] else "all zeros"))
        out[start:start + len(block)] = block / norms[:, None]
    root = Path(os.path.commonpath(absolute)) if len(absolute) > 1 else Path(absolute[0]).parent
    if root.as_posix() in {p for p in absolute}:  # one path is the folder of the others
        root = root.parent
    rel = [Path(p).relative_to(root).as_posix() for p in absolute]
    return out, rel, root


def text_dim(model: str) -> int | None:
    """The embedding dimension of ``model``'s towers from its open_clip config (no weights)."""
    import open_clip

    from mdclust.core.encoders import register_configs

    register_configs()
    cfg = open_clip.get_model_config(model)
    if cfg is None:
        raise MdclustError(f"unknown model {model!r}; see `mdclust models`")
    return int(cfg["embed_dim"]) if "embed_dim" in cfg else None


def import_features(store: Store, spec, features: Path, paths: Path | None, labels=None):
    """Write the images table and the features of ``spec.key`` from a features file; returns
    (images, root, label aspects, label rows naming no image, images without a label)."""
    from mdclust.core.labels import read_labels_csv

    mat, rows, base = read_source(features, paths)
    vectors, rel, root = _checked(mat, rows, base, text_dim(spec.model), spec.model)
    # rows in path order, as `embed` stores a folder's: the same images, the same k-means
    order = sorted(range(len(rel)), key=rel.__getitem__)
    rel, vectors = [rel[i] for i in order], vectors[order]
    shas = [content_id(p) for p in rel]
    with store.lock():
        images = store.attrs(layout.IMAGES)
        if images.get("root") and not images.get(IMPORTED):
            raise MdclustError(f"store {store.path} holds embedded images from "
                               f"{images['root']}; import features into another --store")
        table = read_labels_csv(labels, root) if labels else None
        with store.transaction() as txn:
            txn.put_group(layout.IMAGES, {
                "path": rel, "size": np.zeros(len(rel), np.int64),
                "mtime": np.zeros(len(rel), np.float64), "sha256": shas},
                {"root": str(root), IMPORTED: str(Path(features).expanduser().resolve())})
            txn.put_group(layout.SKIPPED, {"path": [], "size": np.zeros(0, np.int64),
                                           "mtime": np.zeros(0), "sha256": [], "reason": []})
            for key in txn.children("features"):
                if key != spec.key:
                    txn.delete(layout.features(key))  # features of other rows: not these images
            txn.put_group(layout.features(spec.key), {"sha256": shas, "vectors": vectors},
                          {**spec.attrs(), "dim": int(vectors.shape[1]), IMPORTED: True,
                           "source": str(Path(features).expanduser().resolve())})
            unknown, missing = [], 0
            if table is not None:
                data = {"path": rel}
                for aspect, col in table.items():
                    data[aspect] = [col.get(p, "") for p in rel]
                    missing += sum(1 for p in rel if p not in col)
                unknown = sorted({p for col in table.values() for p in col} - set(rel))
                txn.put_group(layout.LABELS, data, {"aspects": list(table)})
    return len(rel), root, list(table or []), unknown, missing
