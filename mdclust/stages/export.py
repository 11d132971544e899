"""`mdclust export --format csv|parquet|jsonl [--with-scores]` and `export --to-folders DIR`.

Rows go out a block at a time (EXPORT_BLOCK), so a million of them never sit in memory as text
or as Python objects; a file is written beside itself and renamed over the target at the end,
so an export that fails leaves any earlier file as it was. CSV keeps its own rules
(stages/evaluate.py, docs/cli.md "CSV rules"); Parquet and JSON Lines hold the values as
stored, since no spreadsheet runs them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np

from mdclust.core import layout, shards
from mdclust.core.errors import BadInput, MdclustError
from mdclust.core.layout import validate_interest
from mdclust.core.store import StoreLike, as_store
from mdclust.stages.cluster import read_clustering
from mdclust.stages.evaluate import EXPORT_BLOCK, _stale, _write_rows, export_csv, write_beside

FORMATS = ("csv", "parquet", "jsonl")
FOLDERS_MARKER = ".mdclust-folders"  # marks a tree `--to-folders` made: only such is replaced
# Names Windows reserves for devices, whatever the extension (CON.txt is CON too).
RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)),
            *(f"lpt{i}" for i in range(1, 10))}
NAME_MAX = 80  # characters of a folder name (paths stay well under every OS's limit)


@dataclass
class ExportResult:
    method: str
    interest: str | None
    format: str
    n: int
    out: str | None
    with_scores: bool = False

    def to_json(self) -> dict:
        return {"method": self.method, "interest": self.interest, "format": self.format,
                "n": self.n, "out": self.out, "with_scores": self.with_scores}


def _rows(store, group, with_scores: bool):
    """Blocks of (paths, clusters, names or None, scores or None)."""
    labels = np.asarray(group["label"], dtype=np.int32)
    paths = group["path"]
    names = list(group.get("cluster_name") or [])
    scores = _scores(store, group, labels, names) if with_scores else None
    for i in range(0, len(labels), EXPORT_BLOCK):
        part = labels[i:i + EXPORT_BLOCK]
        yield (list(paths[i:i + EXPORT_BLOCK]), part,
               [names[c] for c in part] if names else None,
               None if scores is None else scores[i:i + EXPORT_BLOCK])


def _scores(store, group, labels: np.ndarray, names: list[str]) -> np.ndarray:
    """Each image's cosine similarity to its cluster's name (its features and the name's text
    features under the clustering's own template)."""
    from mdclust.core.features import load_image_features
    from mdclust.core.textcache import DEFAULT_TEMPLATE, text_features
    from mdclust.stages.label_free import interest_words

    if not names:
        raise BadInput("--with-scores needs named clusters; this clustering has no names "
                       "(cluster with --interest, or --names-from INTEREST)")
    params = group.attrs["params"]
    feats = load_image_features(store, params["model_key"])
    if feats.paths != list(group["path"]):
        raise MdclustError("the images changed since this clustering was made; run `mdclust "
                           "cluster` again to export scores")
    words = interest_words(store, group)
    template = words[1] if words and set(names) <= set(words[0]) else DEFAULT_TEMPLATE
    T = np.asarray(text_features(store, names, template, model=feats.key), dtype=np.float32)
    E, out = feats.vectors, np.empty(len(labels), dtype=np.float32)
    for i in range(0, len(out), EXPORT_BLOCK):  # in blocks: E may be read from the store
        out[i:i + EXPORT_BLOCK] = np.einsum("ij,ij->i", E[i:i + EXPORT_BLOCK],
                                            T[labels[i:i + EXPORT_BLOCK]])
    return out


def export(store: StoreLike, interest: str | None = None, *, method: str = "kmeans",
           out: str | Path | TextIO | None = None, format: str = "csv",
           with_scores: bool = False, raw: bool = False, warn=None) -> ExportResult:
    """A stored clustering as CSV, Parquet or JSON Lines: one row per image with its path,
    cluster and name (when the clustering names its clusters), and with ``with_scores`` the
    image's cosine similarity to its cluster's name.

    Parameters
    ----------
    store : Store or path
        The mdclust store (HDF5 file).
    interest : str, optional
        The interest the clustering was made for.
    method : str
        The clustering to export.
    out : path or text file, optional
        Where to write; default stdout (csv, jsonl). Parquet needs a path.
    format : str
        csv, parquet or jsonl.
    with_scores : bool
        Add a ``score`` column: the image's similarity to its cluster's name.
    raw : bool
        csv: write every value as stored, without the leading ``'`` (docs/cli.md).
    warn : callable, optional
        Called with a message when the clustering is stale (made before the images changed).

    Returns
    -------
    ExportResult
    """
    store = as_store(store)
    if interest is not None:
        interest = validate_interest(interest)
    if format not in FORMATS:
        raise BadInput(f"unknown --format {format!r}: use {', '.join(FORMATS)}")
    if format == "parquet" and (out is None or hasattr(out, "write")):
        raise BadInput("--format parquet writes a file: give --out FILE")
    if format == "parquet":
        _pyarrow()
    group = read_clustering(store, interest, method, only=layout.CLUSTERING_LABELS)
    if format == "csv" and not with_scores:
        n = export_csv(store, interest, method=method, out=out or sys.stdout, warn=warn,
                       raw=raw)
        return ExportResult(method, interest, format, n, _where(out))
    stale = _stale(store, group)
    if stale and warn is not None:
        warn(stale)
    if format == "csv":  # with scores: the same CSV rules, one more column
        scores = _scores(store, group, np.asarray(group["label"], dtype=np.int32),
                         list(group.get("cluster_name") or []))

        def write(target) -> int:
            return _opened(target, lambda fh: _write_rows(group, fh, raw, scores))
    else:
        blocks = _rows(store, group, with_scores)
        writer = {"jsonl": _write_jsonl, "parquet": _write_parquet}[format]

        def write(target) -> int:
            return writer(blocks, target)
    if out is None or hasattr(out, "write"):
        n = write(out or sys.stdout)
    else:
        n = write_beside(Path(out), write)
    return ExportResult(method, interest, format, n, _where(out), with_scores)


def _where(out) -> str | None:
    return None if out is None or hasattr(out, "write") else str(out)


def _pyarrow():
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError as exc:
        raise MdclustError("--format parquet needs pyarrow: pip install 'mdclust[parquet]'") \
            from exc


def _opened(target, write):
    if hasattr(target, "write"):
        return write(target)
    with open(target, "w", newline="", encoding="utf-8") as fh:
        return write(fh)


def _write_jsonl(blocks, target) -> int:
    def write(fh) -> int:
        n = 0
        for paths, labels, names, scores in blocks:
            lines = []
            for i, (p, c) in enumerate(zip(paths, labels.tolist())):
                row = {"path": p, "cluster": c}
                if names:
                    row["name"] = names[i]
                if scores is not None:
                    row["score"] = round(float(scores[i]), 6)
                lines.append(json.dumps(row, ensure_ascii=False))
            fh.write("\n".join(lines) + "\n" if lines else "")
            n += len(labels)
        return n
    return _opened(target, write)


def _write_parquet(blocks, target: Path) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer, n = None, 0
    try:
        for paths, labels, names, scores in blocks:
            cols = {"path": pa.array(paths, pa.string()), "cluster": pa.array(labels, pa.int32())}
            if names:
                cols["name"] = pa.array(names, pa.string()).dictionary_encode()
            if scores is not None:
                cols["score"] = pa.array(scores, pa.float32())
            table = pa.table(cols)
            if writer is None:
                writer = pq.ParquetWriter(str(target), table.schema, compression="zstd")
            writer.write_table(table)
            n += len(labels)
        if writer is None:  # no rows: still a valid file with the columns
            writer = pq.ParquetWriter(str(target), pa.schema([("path", pa.string()),
                                                              ("cluster", pa.int32())]))
    finally:
        if writer is not None:
            writer.close()
    return n


# -- one folder per cluster --------------------------------------------------------------------
@dataclass
class FoldersResult:
    out: str
    folders: list[str] = field(default_factory=list)
    linked: int = 0
    missing: int = 0
    copied: bool = False

    def to_json(self) -> dict:
        return {"out": self.out, "folders": self.folders, "linked": self.linked,
                "missing": self.missing, "copied": self.copied}


def safe_name(name: str) -> str:
    """A folder name every OS accepts: no path separators, no control or reserved characters,
    not "." or "..", no trailing dot or space, not a Windows device name; "" when nothing
    is left."""
    s = re.sub(r'[\x00-\x1f\x7f<>:"/\\|?*]', "_", name).strip().rstrip(". ")
    s = s.lstrip(".")[:NAME_MAX].rstrip(". ")
    if s.split(".")[0].lower() in RESERVED:
        s = "_" + s
    return s


def folder_names(names: list[str], k: int) -> list[str]:
    """One distinct safe folder name per cluster: its name, else cluster-N; names that
    collide (or clean to nothing) get their cluster number."""
    base = [safe_name(names[c]) if c < len(names) else "" for c in range(k)]
    counts: dict[str, int] = {}
    for b in base:
        counts[b.lower()] = counts.get(b.lower(), 0) + 1
    return [b if b and counts[b.lower()] == 1 else
            (f"{b} {c}" if b else f"cluster-{c}") for c, b in enumerate(base)]


def export_folders(store: StoreLike, interest: str | None = None, *, method: str = "kmeans",
                   out: str | Path = "clusters", copy: bool = False,
                   warn=None) -> FoldersResult:
    """One folder per cluster under ``out``, named by the cluster's name, holding a symbolic
    link to each of its images (or a copy with ``copy``). Built beside ``out`` and renamed
    into place: a failed run leaves no half-written tree, and a rerun replaces the tree an
    earlier run made (a folder that is not one is refused).

    Parameters
    ----------
    store : Store or path
        The mdclust store (HDF5 file).
    interest : str, optional
        The interest the clustering was made for.
    method : str
        The clustering to export.
    out : path
        The folder to create (or replace, when an earlier `--to-folders` made it).
    copy : bool
        Copy the images instead of linking to them.
    warn : callable, optional
        Called with a message about images that are missing (not linked).

    Returns
    -------
    FoldersResult
    """
    store = as_store(store)
    if interest is not None:
        interest = validate_interest(interest)
    out = Path(out).expanduser().absolute()
    if out.exists() and not (out.is_dir() and ((out / FOLDERS_MARKER).is_file()
                                               or not any(out.iterdir()))):
        raise BadInput(f"{out} exists and was not made by `export --to-folders`; give a new "
                       "or empty folder (nothing was written)")
    group = read_clustering(store, interest, method, only=layout.CLUSTERING_LABELS)
    root = store.attrs(layout.IMAGES).get("root")
    if not root:
        raise MdclustError("the store records no image folder; run `mdclust embed` first")
    labels = np.asarray(group["label"], dtype=np.int64)
    k = int(labels.max()) + 1 if len(labels) else 0
    folders = folder_names(list(group.get("cluster_name") or []), k)
    result = FoldersResult(str(out), folders, copied=copy)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    try:
        tmp.mkdir(parents=True)
        for name in folders:
            (tmp / name).mkdir()
        used: list[set[str]] = [set() for _ in folders]
        for path, c in zip(group["path"], labels.tolist()):
            src = Path(root) / path
            member = None if src.exists() else shards.split(src)
            if member is None and not src.exists():
                result.missing += 1
                continue
            dest = tmp / folders[c] / _member_name(path, used[c])
            if member is not None:  # inside a tar shard: nothing to link to, so a copy
                dest.write_bytes(shards.read_member(*member))
            elif copy:
                shutil.copy2(src, dest)
            else:
                os.symlink(src, dest)
            result.linked += 1
        (tmp / FOLDERS_MARKER).write_text(json.dumps({"method": method, "interest": interest,
                                                      "store": str(store.path)}) + "\n")
        if out.exists():
            os.replace(out, old)
        os.replace(tmp, out)
    except OSError as exc:
        if old.exists() and not out.exists():
            os.replace(old, out)  # put the earlier tree back
        raise MdclustError(f"cannot write {out}: {exc.strerror or exc}"
                           + ("; use --copy where links are not allowed"
                              if not copy and isinstance(exc, (NotImplementedError,
                                                               PermissionError)) else "")) \
            from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    if result.missing and warn is not None:
        warn(f"{result.missing} images of this clustering are no longer under {root}; "
             "they were left out")
    return result


def _member_name(path: str, used: set[str]) -> str:
    """The image's file name in its cluster's folder: its own, numbered when two images of
    the cluster share it (same name in different subfolders)."""
    name = safe_name(Path(path).name) or "image"
    stem, dot, ext = name.rpartition(".")
    stem, ext = (stem, dot + ext) if dot and stem else (name, "")
    candidate, i = name, 2
    while candidate.lower() in used:
        candidate, i = f"{stem} ({i}){ext}", i + 1
    used.add(candidate.lower())
    return candidate
