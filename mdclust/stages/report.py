"""`mdclust report`: a static HTML page to look at the clusterings — named clusters with their
most central images, the metrics and confusion matrix when labels exist, the same images under
two interests, a 2-D map of the features, how k was chosen (the score of every k tried), the
label-free scores (stages/label_free.py), and where each clustering came from.

The page is one self-contained file (``DIR/index.html``: inline CSS, inline SVG, no script or
font from anywhere) plus ``DIR/thumbs/``, JPEG thumbnails named by content hash and reused by
later runs. Its size is bounded whatever the collection: at most ``thumbs`` images per cluster,
one per cross-tab cell, ``map_points`` points per map.
"""

from __future__ import annotations

import functools
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mdclust.core import layout
from mdclust.core.errors import BadInput, MdclustError
from mdclust.core.features import load_image_features
from mdclust.core.images import OWN_FOLDER_MARKER, max_pixels
from mdclust.core.layout import validate_interest
from mdclust.core.metrics import scores
from mdclust.core.progress import progress_bar
from mdclust.core.rows import nearest_to_means
from mdclust.core.store import StoreLike, as_store
from mdclust.stages.report_card import (
    PER_CLUSTER,
    STABILITY_ROWS,
    STABILITY_RUNS,
    k_curve,
    label_free_card,
)

# Preferred clustering per interest for the cross-tab: the learned and language-assisted ones.
CROSS_TAB_ORDER = ("multidproxy", "gradnorm", "tac", "sic", "zeroshot", "pipcdr", "kmeans")
MAX_CROSS_TABS = 3
UMAP_MIN_POINTS = 10  # below this UMAP's neighbour graph is degenerate: PCA
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1",
           "#ff9da7", "#9c755f", "#bab0ac", "#1f77b4", "#d62728", "#2ca02c", "#9467bd",
           "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#aec7e8")



@dataclass
class ReportResult:
    out: str
    index: str
    clusterings: int = 0
    clusters: int = 0
    thumbnails_written: int = 0
    thumbnails_reused: int = 0
    missing_images: list[str] = field(default_factory=list)
    page_bytes: int = 0
    seconds: float = 0.0
    map: str = "pca"  # how the 2-D maps were made: umap or pca

    def to_json(self) -> dict:
        d = asdict(self)
        d["missing_images"] = len(self.missing_images)
        return d


def report(store: StoreLike, out: str | os.PathLike, *, interests: list[str] | None = None,
           methods: list[str] | None = None, thumbs: int = 12, aspect: str | None = None,
           map_points: int = 3000, thumb_size: int = 96, map: str = "auto",
           show_progress: bool = False) -> ReportResult:
    """Write a static report of the stored clusterings to ``out``/index.html.

    Parameters
    ----------
    store : Store or path
        The mdclust store (HDF5 file).
    out : path
        Folder for index.html and thumbs/ (created; thumbnails already there are reused), with
        a ``.mdclust-report`` marker that `embed` skips. Not a file, and not inside the image
        folder the store embedded (the next `embed` would take the thumbnails in).
    interests : list of str, optional
        Only these interests (and the interest-free clusterings when none is given).
    methods : list of str, optional
        Only these methods.
    thumbs : int
        Thumbnails per cluster, the most central first (nearest to the cluster's mean).
    aspect : str, optional
        Ground-truth aspect for the metrics; default the interest's name when labels hold it.
    map_points : int
        Points on each 2-D map (a seeded sample of the images).
    thumb_size : int
        Thumbnail side in pixels.
    map : str
        How the 2-D maps are made: umap (umap-learn, ``pip install 'mdclust[umap]'``), pca,
        or auto (UMAP where umap-learn is installed, else PCA); the page names the method.
    show_progress : bool
        Show progress on stderr.

    Returns
    -------
    ReportResult
        Where the page is, its size, and the images that could not be read (moved files are
        shown as placeholders).
    """
    t0 = time.perf_counter()
    store = as_store(store)
    if thumbs < 0 or map_points < 0 or thumb_size < 8:
        raise BadInput("--thumbs and --map-points must be >= 0 and --thumb-size >= 8")
    map = _map_method(map)
    store.validate()
    max_pixels()  # a bad $MDCLUST_MAX_PIXELS is one error here, not a placeholder per image
    out = Path(out)
    embedded = store.attrs(layout.IMAGES).get("root")
    _check_out(out, Path(embedded) if embedded else None)
    root = Path(embedded or ".")
    found = _clusterings(store, interests, methods)
    if not found:
        raise BadInput("no clusterings to show" + (" for those --interest/--method"
                                                   if interests or methods else
                                                   "; run `mdclust cluster` first"))
    feats = load_image_features(store, store.attrs(found[0][2])["params"].get("model_key"))
    row_of = functools.cache(lambda: {p: i for i, p in enumerate(feats.paths)})  # when needed
    truth = store.read_group(layout.LABELS)
    thumbs_dir = out / "thumbs"
    try:
        thumbs_dir.mkdir(parents=True, exist_ok=True)
        (out / OWN_FOLDER_MARKER).write_text(
            "Written by `mdclust report`; `mdclust embed` skips every folder holding this "
            "file.\n", encoding="utf-8")
    except OSError as exc:
        raise MdclustError(f"cannot write the report into {out}: "
                           f"{exc.strerror or exc}") from exc
    result = ReportResult(str(out), str(out / "index.html"))
    maker = _Thumbs(root, thumbs_dir, thumb_size, feats.shas, feats.paths, result)
    xy = _map_xy(feats.vectors, map_points, method=map)
    result.map = map

    sections = []
    others: dict[str, object] = {}  # features of another model than feats, by key
    for interest, method, path in found:
        g = store.read_group(path, layout.CLUSTERING_LABELS)
        sections.append(_section(store, interest, method, g, feats, row_of, truth, aspect,
                                 thumbs, maker, xy))
        sections[-1]["free"] = label_free_card(store, path, g, feats, others)
    result.clusterings = len(sections)
    result.clusters = sum(len(s["clusters"]) for s in sections)
    tabs = _cross_tabs(sections, feats, maker)
    with progress_bar(show_progress, unit="img") as bar:
        maker.write_all(bar)
    html = _render(store, sections, tabs, result, feats.key)
    tmp = out / ".index.html.tmp"
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, out / "index.html")
    result.page_bytes = len(html.encode())
    result.seconds = round(time.perf_counter() - t0, 3)
    return result


def _check_out(out: Path, root: Path | None) -> None:
    """Refuse an --out that is a file, or one inside the embedded collection: its thumbnails
    would be taken in as images by the next `embed` (each image twice)."""
    if out.exists() and not out.is_dir():
        raise BadInput(f"--out {out} is a file, not a folder; choose a folder for index.html "
                       "and thumbs/")
    if root is None:
        return
    images, target = root.resolve(), out.resolve()
    if target == images or images in target.parents:
        raise BadInput(f"--out {out} is inside the image folder {images}, whose next `embed` "
                       "would take in the thumbnails; choose a folder outside it")


def _clusterings(store, interests, methods) -> list[tuple[str | None, str, str]]:
    known = store.children(layout.INTERESTS)
    if interests:
        interests = [validate_interest(i) for i in interests]
        unknown = [i for i in interests if i not in known]
        if unknown:
            raise BadInput(f"no interest {unknown[0]!r} in the store; it has "
                           + (", ".join(known) or "none"))
    found = []
    for name in interests or known:
        for m in store.children(layout.interest(name) + "/clusterings"):
            found.append((name, m, layout.clustering(name, m)))
    if not interests:
        found += [(None, m, layout.clustering(None, m))
                  for m in store.children("clusterings")]
    return [f for f in found if not methods or f[1] in methods]


class _Thumbs:
    """Thumbnails by content hash: planned while sections are built, written once at the end
    (and not at all when an earlier run left them)."""

    def __init__(self, root, folder, size, shas, paths, result):
        self.root, self.folder, self.size, self.result = root, folder, size, result
        self.shas, self.paths = shas, paths
        self.wanted: dict[int, str] = {}  # image row -> file name

    def ref(self, row: int) -> dict:
        name = f"{self.shas[row][:20]}.jpg"
        self.wanted[row] = name
        return {"src": f"thumbs/{name}", "path": self.paths[row], "row": row}

    def write_all(self, bar) -> None:
        from PIL import Image

        from mdclust.core.images import load_rgb

        task = bar.add_task("thumbnails", total=len(self.wanted))
        for row, name in self.wanted.items():
            target = self.folder / name
            if target.exists():
                self.result.thumbnails_reused += 1
            else:
                try:
                    img = load_rgb(self.root / self.paths[row])
                    img.thumbnail((self.size, self.size), Image.Resampling.BILINEAR)
                    img.save(target.with_suffix(".tmp"), "JPEG", quality=80)
                    os.replace(target.with_suffix(".tmp"), target)
                    self.result.thumbnails_written += 1
                except (OSError, ValueError):
                    self.result.missing_images.append(self.paths[row])
            bar.advance(task)


MAPS = ("auto", "umap", "pca")


def _map_method(how: str) -> str:
    """umap or pca: what ``how`` asks for, auto meaning UMAP where umap-learn is installed."""
    import importlib.util

    if how not in MAPS:
        raise BadInput(f"--map must be one of {', '.join(MAPS)}, not {how!r}")
    spec = importlib.util.find_spec("umap")
    have = spec is not None and spec.origin is not None  # a bare leftover folder is no umap
    if how == "umap" and not have:
        raise BadInput("--map umap needs umap-learn: pip install 'mdclust[umap]'")
    return "umap" if how == "umap" or (how == "auto" and have) else "pca"


def _map_xy(E: np.ndarray, points: int, seed: int = 0,
            method: str = "pca") -> tuple[np.ndarray, np.ndarray]:
    """(rows, their 2-D coordinates in [0, 1]) for a seeded sample of the images: UMAP (cosine
    neighbours, as CLIP features are compared) or PCA."""
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(E), size=min(points, len(E)), replace=False))
    if len(rows) < 3:
        return rows, np.full((len(rows), 2), 0.5)
    S = E[rows]  # read once: E may be the store's StoredRows
    X = S - S.mean(0)
    if method == "umap" and len(rows) > UMAP_MIN_POINTS:
        import umap

        xy = umap.UMAP(n_components=2, metric="cosine", random_state=seed, n_jobs=1,
                       n_neighbors=min(15, len(rows) - 1)).fit_transform(S)
    else:
        _, _, vt = np.linalg.svd(X, full_matrices=False)
        xy = X @ vt[:2].T
    lo, hi = xy.min(0), xy.max(0)
    return rows, (xy - lo) / np.where(hi > lo, hi - lo, 1)


def _section(store, interest, method, g, feats, row_of, truth, aspect, thumbs, maker, xy):
    labels = np.asarray(g["label"], dtype=np.int64)
    rows = (np.arange(len(labels)) if g["path"] == feats.paths else  # the usual case
            np.array([row_of().get(p, -1) for p in g["path"]], dtype=np.int64))
    names = list(g.get("cluster_name") or [])
    share = g.get("name_share")
    k = int(labels.max()) + 1 if len(labels) else 0
    known = rows >= 0
    # each cluster's images nearest its mean image feature, in two passes over the features
    exemplars = nearest_to_means(feats.vectors, rows[known], labels[known], k, thumbs)
    sizes = np.bincount(labels, minlength=k)
    clusters = []
    for c in range(k):
        order, size = exemplars[c], int(sizes[c])
        clusters.append({"id": c, "name": names[c] if c < len(names) else "", "size": size,
                         "colour": PALETTE[c % len(PALETTE)],
                         "share": None if share is None else round(float(share[c]), 3),
                         "thumbs": [maker.ref(int(r)) for r in order]})
    clusters.sort(key=lambda x: -x["size"])
    section = {"interest": interest, "method": method, "k": k, "n": len(labels),
               "clusters": clusters, "labels": labels, "rows": rows,
               "provenance": {key: g.attrs.get(key) for key in ("method", "time",
                                                                "mdclust_version")},
               "params": {key: value for key, value in g.attrs.get("params", {}).items()
                          if key != "k_choice"},  # drawn as the k curve instead
               "kcurve": k_curve(g.attrs.get("params", {}).get("k_choice"), k),
               "metrics": None, "confusion": None}
    chosen = aspect or (interest if truth is not None and interest in truth.data else None)
    if truth is not None and chosen in truth.data:
        table = dict(zip(truth["path"], truth[chosen]))
        keep = [i for i, p in enumerate(g["path"]) if table.get(p)]
        if keep:
            t = [table[g["path"][i]] for i in keep]
            section["metrics"] = {"aspect": chosen, **{m: round(float(v), 4) for m, v in
                                                       scores(t, labels[keep]).items()}}
            values = sorted(set(t))
            counts = Counter((int(labels[i]), table[g["path"][i]]) for i in keep)
            section["confusion"] = {"aspect": chosen, "values": values, "rows": [
                {"name": cl["name"] or f"cluster {cl['id']}",
                 "counts": [counts.get((cl["id"], v), 0) for v in values]}
                for cl in clusters]}
    map_rows, coords = xy
    where = np.full(max(len(feats.paths), 1), -1, dtype=np.int64)  # feature row -> row here
    where[rows[known]] = np.flatnonzero(known)
    section["map"] = [(round(float(x) * 300, 1), round(float(y) * 300, 1),
                       PALETTE[int(labels[where[int(r)]]) % len(PALETTE)])
                      for r, (x, y) in zip(map_rows, coords) if where[int(r)] >= 0]
    return section


def _cross_tabs(sections, feats, maker) -> list[dict]:
    """Two interests' clusterings of the same images: counts per (cluster of A, cluster of
    B), each non-empty cell with the image nearest to the cell's mean."""
    best = {}
    for s in sections:
        if s["interest"] is None:
            continue
        rank = CROSS_TAB_ORDER.index(s["method"]) if s["method"] in CROSS_TAB_ORDER else 99
        if s["interest"] not in best or rank < best[s["interest"]][0]:
            best[s["interest"]] = (rank, s)
    chosen = [s for _, s in best.values()]
    tabs = []
    for agree, a, b in telling_pairs(chosen)[:MAX_CROSS_TABS]:
        tabs.append({**_cross_tab(a, b, feats, maker), "nmi": agree})
    return tabs


def telling_pairs(sections) -> list[tuple[float, dict, dict]]:
    """Every pair of clusterings as (NMI between them, a, b), least alike first.

    Two interests that group the images alike make a near-diagonal table that shows little;
    the least alike pairs are the picture of multiple clustering. Ties keep the input order.
    """
    from sklearn.metrics import normalized_mutual_info_score

    n = max((int(np.max(s["rows"], initial=-1)) for s in sections), default=-1) + 1
    by_row = []  # each clustering's label per image row, -1 where it has none
    for s in sections:
        rows, labels = np.asarray(s["rows"], dtype=np.int64), np.asarray(s["labels"])
        lab = np.full(n, -1, dtype=np.int64)
        lab[rows[rows >= 0]] = labels[rows >= 0]
        by_row.append(lab)
    out = []
    for i, j in ((i, j) for i in range(len(sections)) for j in range(i + 1, len(sections))):
        both = (by_row[i] >= 0) & (by_row[j] >= 0)
        agree = normalized_mutual_info_score(by_row[i][both], by_row[j][both]) \
            if both.any() else 1.0
        out.append((round(float(agree), 3), sections[i], sections[j]))
    return sorted(out, key=lambda t: t[0])


def _cross_tab(a, b, feats, maker) -> dict:
    n = len(feats.paths)
    label_b = np.full(n, -1, dtype=np.int64)  # b's cluster of each feature row
    ok = b["rows"] >= 0
    label_b[b["rows"][ok]] = b["labels"][ok]
    ra, la = a["rows"], a["labels"]
    both = (ra >= 0) & (label_b[np.where(ra >= 0, ra, 0)] >= 0)
    kb, a_k = max(len(b["clusters"]), 1), max(len(a["clusters"]), 1)
    cell = la[both] * kb + label_b[ra[both]]
    counts = np.bincount(cell, minlength=a_k * kb)
    # each cell's image nearest its mean, all cells in two passes over the features
    best = nearest_to_means(feats.vectors, ra[both], cell, a_k * kb, 1)
    cols = b["clusters"]
    rows = []
    for ca in a["clusters"]:
        row = []
        for cb in cols:
            c = ca["id"] * kb + cb["id"]
            thumb = maker.ref(int(best[c][0])) if counts[c] else None
            row.append({"count": int(counts[c]), "thumb": thumb})
        rows.append({"name": ca["name"] or f"cluster {ca['id']}", "cells": row})
    return {"a": a, "b": b, "cols": [c["name"] or f"cluster {c['id']}" for c in cols],
            "rows": rows}


def _render(store, sections, tabs, result, model_key) -> str:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parents[1] / "data" / "templates"),
        autoescape=True, trim_blocks=True, lstrip_blocks=True)
    missing = set(result.missing_images)
    info = store.attrs(layout.IMAGES)
    return env.get_template("report.html.j2").render(
        store=str(store.path), root=info.get("root"), model_key=model_key,
        sections=sections, tabs=tabs, missing=missing, n_missing=len(missing),
        map_method="UMAP (cosine)" if result.map == "umap" else "PCA",
        stability_runs=STABILITY_RUNS,
        stability_sample=f"a seeded sample of max({STABILITY_ROWS:,}, {PER_CLUSTER} per "
                         "cluster) images, all of them when fewer",
        generated=time.strftime("%Y-%m-%d %H:%M"))
