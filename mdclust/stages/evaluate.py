"""`mdclust eval` and `mdclust export`.

Protocol for methods that produce features (shared/papers/001): k-means ``runs`` times with
seeds 0..runs-1 on the stored features, mean and standard deviation of each metric. Methods
that produce labels only (zeroshot) are scored once.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np

from mdclust.core import layout
from mdclust.core.errors import BadInput, MdclustError, QualityGateFailed, StaleResult
from mdclust.core.features import clustering_features, load_image_features
from mdclust.core.labels import read_labels_csv
from mdclust.core.layout import validate_interest
from mdclust.core.metrics import codes, scores
from mdclust.core.store import Store, StoreLike, as_store
from mdclust.methods.baselines import kmeans_runs
from mdclust.stages import label_free
from mdclust.stages.cluster import read_clustering

METRICS = ("nmi", "ari", "acc", "ri")


@dataclass
class EvalResult:
    """Mean and standard deviation of each metric over the runs, and every run's figure
    (``per_run["nmi"][s]`` is k-means seed s); the labelled figures are None when the store
    has no ground truth. The label-free scores (stages/label_free.py) are always there:
    ``stability`` (mean pairwise NMI of the runs; ``stability_ari`` likewise), ``silhouette``
    and ``interest_agreement`` (None where they do not apply)."""

    interest: str | None
    method: str
    aspect: str | None
    k: int
    n: int
    unlabeled: int
    runs: int
    classes: int
    nmi: float | None = None
    nmi_std: float | None = None
    ari: float | None = None
    ari_std: float | None = None
    acc: float | None = None
    acc_std: float | None = None
    ri: float | None = None
    ri_std: float | None = None
    per_run: dict[str, list[float]] = field(default_factory=dict)
    stability: float | None = None
    stability_ari: float | None = None
    silhouette: float | None = None
    interest_agreement: float | None = None
    k_choice: dict | None = None

    @property
    def labelled(self) -> bool:
        return self.nmi is not None

    def to_json(self) -> dict:
        return asdict(self)


def _truth(store: Store, aspect: str | None, interest: str | None,
           labels_csv: str | Path | None) -> tuple[str | None, dict[str, str] | None]:
    """(aspect, path -> value); (None, None) when the store has no labels and none are given."""
    if labels_csv:
        root = store.attrs(layout.IMAGES).get("root")
        table = read_labels_csv(labels_csv, Path(root) if root else None)
    else:
        g = store.read_group(layout.LABELS)
        if g is None:
            if aspect is not None:
                raise MdclustError("no ground truth for --aspect: pass --labels CSV, or "
                                   "embed with --labels")
            return None, None
        table = {a: dict(zip(g["path"], g[a])) for a in g.attrs.get("aspects", [])}
    aspects = list(table)
    if aspect is None:
        if interest in table:
            aspect = interest
        elif len(aspects) == 1:
            aspect = aspects[0]
        else:
            raise BadInput("choose the ground-truth aspect with --aspect: "
                               + ", ".join(aspects))
    if aspect not in table:
        raise MdclustError(f"no labels for aspect {aspect!r}; known: {', '.join(aspects)}")
    return aspect, table[aspect]


def evaluate(store: StoreLike, interest: str | None = None, *, method: str = "kmeans",
             aspect: str | None = None, labels: str | Path | None = None, runs: int = 10,
             fail_under_nmi: float | None = None, backend: str = "auto") -> EvalResult:
    """Score a clustering: against ground truth (NMI, ARI, ACC, RI) when there is any, and
    always without labels (stability, silhouette, interest agreement; docs/k.md).

    Parameters
    ----------
    store : Store or path
        The mdclust store (HDF5 file).
    interest : str, optional
        The interest the clustering was made for (none for interest-free kmeans/pipcdr).
    method : str
        The clustering to score (a method of mdclust.methods).
    aspect : str, optional
        Ground-truth aspect; default the interest's name, or the only one.
    labels : path, optional
        Ground-truth CSV (path, aspects...) instead of the stored labels.
    runs : int
        k-means runs (seeds 0..runs-1) on the method's features; mean and std are reported,
        and their agreement is the stability.
    fail_under_nmi : float, optional
        Raise QualityGateFailed when the mean NMI is below this (a CI gate; needs labels).
    backend : str
        k-means implementation: auto (faiss from 20,000 images, else scikit-learn), sklearn
        or faiss.

    Returns
    -------
    EvalResult

    Raises
    ------
    BadInput, MissingStage, StaleResult, QualityGateFailed
        With the one-line message the CLI prints.
    """
    store = as_store(store)
    if interest is not None:
        interest = validate_interest(interest)
    if runs < 1:
        raise BadInput("--runs must be at least 1")
    store.validate()
    # text counterparts (10 GB at 10M) are read by clustering_features, in blocks at scale
    group = read_clustering(store, interest, method, only=layout.CLUSTERING_LABELS + (
        "features",))
    aspect, truth = _truth(store, aspect, interest, labels)
    if truth is None and fail_under_nmi is not None:
        raise BadInput("--fail-under-nmi needs ground truth: pass --labels CSV, or embed "
                       "with --labels")
    paths = list(group["path"])
    rows = [i for i, p in enumerate(paths) if truth.get(p, "")] if truth is not None else []
    if truth is not None and not rows:
        raise MdclustError(f"none of the clustered images has a {aspect!r} label")
    params = group.attrs["params"]
    k = int(params["k"])
    feats = load_image_features(store, params["model_key"])  # read once, for both uses
    X = clustering_features(store, group, feats)
    stored = np.asarray(group["label"])
    all_runs = [stored] if X is None else kmeans_runs(X, k, range(runs), backend=backend)
    t = codes([truth[paths[i]] for i in rows])  # once, not per run
    out = EvalResult(interest, method, aspect, k, len(rows), len(paths) - len(rows),
                     len(all_runs), len(np.unique(t)), k_choice=params.get("k_choice"))
    if truth is not None:
        per_run = [scores(t, labs[rows]) for labs in all_runs]
        for m in METRICS:
            vals = np.array([r[m] for r in per_run])
            setattr(out, m, round(float(vals.mean()), 6))
            setattr(out, f"{m}_std", round(float(vals.std()), 6))
        out.per_run = {m: [round(float(r[m]), 6) for r in per_run] for m in METRICS}
    E = feats.vectors if feats.paths == paths else _aligned(feats, paths)
    free = label_free.scores(store, group, E, X, all_runs if X is not None else None)
    for name, value in free.items():
        setattr(out, name, value)
    if fail_under_nmi is not None and out.nmi < fail_under_nmi:
        raise QualityGateFailed(f"NMI {out.nmi:.4f} of {method} on {aspect} is below "
                                f"--fail-under-nmi {fail_under_nmi}", details=out.to_json())
    return out


def _aligned(feats, paths: list[str]) -> np.ndarray:
    """Image features in a clustering's row order (a clustering made before images changed)."""
    row_of = {p: i for i, p in enumerate(feats.paths)}
    missing = [p for p in paths if p not in row_of]
    if missing:
        raise StaleResult("the images changed since this clustering was made; "
                          "run `mdclust cluster` again")
    return feats.vectors[[row_of[p] for p in paths]]


def _stale(store: Store, group) -> str:
    """Why a clustering no longer covers the store's images ("" when it does)."""
    with store.snapshot() as snap:
        now = set(snap.read_strings(layout.IMAGE_PATHS))
    rows = list(group["path"])
    missing = len(now - set(rows))
    if not missing and len(now) == len(rows):
        return ""
    return (f"this clustering has {len(rows)} rows but the store now holds {len(now)} images "
            f"({missing} not in it); run `mdclust cluster` again for a current one")


EXPORT_BLOCK = 65_536  # rows formatted per write: bounded memory at any N
# A spreadsheet reads a cell that starts with one of these as a formula (OWASP, CSV injection).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def export_csv(store: StoreLike, interest: str | None = None, *, method: str = "kmeans",
               out: str | Path | TextIO | None = None, warn=None,
               raw: bool = False) -> str | int:
    """A stored clustering as CSV: path,cluster (and name, when the method names them).

    Text cells that a spreadsheet would run as a formula (starting with ``= + - @``, a tab or
    a carriage return) get a leading ``'``, as OWASP advises; fields are quoted where CSV
    needs it, a carriage return included (docs/cli.md, "CSV rules").

    Parameters
    ----------
    store : Store or path
        The mdclust store (HDF5 file).
    interest : str, optional
        The interest the clustering was made for.
    method : str
        The clustering to export.
    out : path or text file, optional
        Write the CSV there, a block of rows at a time, and return the number of rows. A path
        is written to a temporary file beside it and renamed over it at the end, so an export
        that fails or is killed leaves any earlier file as it was.
    warn : callable, optional
        Called with a message when the clustering is stale (made before the images changed);
        the rows are still written, as stored.
    raw : bool
        Write every value as stored, without the leading ``'`` (still quoted where needed).

    Returns
    -------
    str or int
        The CSV text, or with ``out`` the number of rows written (``mdclust.load_clustering``
        gives the same rows as arrays).
    """
    store = as_store(store)
    if interest is not None:
        interest = validate_interest(interest)
    group = read_clustering(store, interest, method, only=layout.CLUSTERING_LABELS)
    stale = _stale(store, group)
    if stale and warn is not None:
        warn(stale)
    if out is None:
        buf = io.StringIO(newline="")
        _write_rows(group, buf, raw)
        return buf.getvalue()
    if hasattr(out, "write"):
        return _write_rows(group, out, raw)
    def write(tmp: Path) -> int:
        with open(tmp, "w", newline="") as fh:
            return _write_rows(group, fh, raw)

    return write_beside(Path(out), write)


def write_beside(out: Path, write) -> int:
    """``write(tmp)`` into a temporary file beside ``out``, then renamed over it: a write that
    fails or is killed leaves an earlier ``out`` as it was."""
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        n = write(tmp)
        os.replace(tmp, out)
    except OSError as exc:
        raise MdclustError(f"cannot write {out}: {exc.strerror or exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return n


def _write_rows(group, fh: TextIO, raw: bool = False, scores: np.ndarray | None = None) -> int:
    """The CSV rows of a clustering, by the CSV rules above; ``scores``, when given, one per
    row, as a last column (`export --with-scores`)."""
    names = group.get("cluster_name")
    paths, labels = group["path"], np.asarray(group["label"])
    # The csv module quotes only the line terminator's characters ("\n" here): a block holding
    # a carriage return goes through a writer that quotes the fields, or readers split rows.
    plain = csv.writer(fh, lineterminator="\n")  # the file buffers; a block at a time
    quoted = csv.writer(fh, lineterminator="\n", quoting=csv.QUOTE_NONNUMERIC)
    plain.writerow(["path", "cluster"] + (["name"] if names else [])
                   + (["score"] if scores is not None else []))
    if names:
        names = list(names) if raw else [_defused(n) for n in names]
    for i in range(0, len(labels), EXPORT_BLOCK):
        part = labels[i:i + EXPORT_BLOCK].tolist()
        block = list(paths[i:i + EXPORT_BLOCK])
        if not raw:
            block = [_defused(p) for p in block]
        cols = [block, part] + ([[names[c] for c in part]] if names else [])
        text = "".join(block) + ("".join(cols[2]) if names else "")
        if scores is not None:
            cols.append([f"{x:.6f}" for x in scores[i:i + EXPORT_BLOCK]])
        (quoted if "\r" in text else plain).writerows(zip(*cols))
    return len(labels)


def _defused(value: str) -> str:
    return "'" + value if value.startswith(FORMULA_START) else value
