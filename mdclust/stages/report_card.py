"""What each clustering's card in `mdclust report` shows beside its clusters: how its k was
chosen (the k curve) and its label-free scores (stages/label_free.py)."""

from __future__ import annotations

import numpy as np

from mdclust.core.errors import MdclustError, StaleResult
from mdclust.core.features import clustering_features, load_image_features
from mdclust.core.store import Group
from mdclust.methods.baselines import kmeans
from mdclust.stages import label_free

# Stability from fewer runs on fewer rows than `eval` (10 runs, every row): three k-means
# fits of a sample of max(5,000, 40 k) rows cost the same at 1M images as at 10,000.
STABILITY_RUNS = 3
STABILITY_ROWS = 5000
PER_CLUSTER = 40  # rows per cluster the sample holds at least: faiss asks 39 (k = 1000: 40,000)
# Above this many images every score of the card is computed on that one sample, read once:
# at 10M each pass over the features reads 10 GB (20 GB for GradNorm's [E; V]), and the
# silhouette's sample and the zero-shot agreement over every image were three more passes.
SAMPLED_FROM = 100_000
KCURVE_SIZE = (320, 150)  # the k curve's SVG, as wide as the map above it
KCURVE_PAD = (40, 14, 22, 24)  # left, right, top, bottom: room for the score and k labels
HOW_K = {"votes": "chosen by the images' votes over the interest's words",
         "silhouette": "chosen by the silhouette of k-means on the features",
         "given": "given (--k)", "stored": "given to candidates",
         "trained": "the trained method's own k"}


def k_curve(choice: dict | None, k: int) -> dict:
    """How a clustering's k was chosen, for its card: a caption, and where k was searched the
    score of every k tried as SVG points (x = k, higher score higher up). ``choice`` is the
    stored ``params["k_choice"]`` (None in stores made before k could be chosen)."""
    choice = choice or {}
    chosen = int(choice.get("k", k))
    caption = f"k = {chosen}, " + HOW_K.get(choice.get("how"), "how k was chosen is not "
                                           "recorded (a clustering made before --k auto)")
    scores = sorted((int(a), float(b)) for a, b in (choice.get("scores") or {}).items())
    curve = {"k": chosen, "caption": caption, "points": [], "ticks": [], "width": KCURVE_SIZE[0],
             "height": KCURVE_SIZE[1]}
    if not scores:
        return curve
    if choice.get("rows"):
        curve["caption"] += f"; the curve: silhouette of each k tried, on {choice['rows']} images"
    (width, height), (left, right, top, bottom) = KCURVE_SIZE, KCURVE_PAD
    ks, values = [a for a, _ in scores], [v for _, v in scores]
    lo, hi = min(values), max(values)

    def x(a: int) -> float:
        return round(left + (a - ks[0]) / max(ks[-1] - ks[0], 1) * (width - left - right), 1)

    def y(v: float) -> float:
        share = (hi - v) / (hi - lo) if hi > lo else 0.5
        return round(top + share * (height - top - bottom), 1)

    curve["points"] = [{"k": a, "score": v, "x": x(a), "y": y(v), "chosen": a == chosen}
                       for a, v in scores]
    step = 1 if len(ks) <= 12 else 2  # two-digit labels a tick apart would overlap
    curve["ticks"] = [{"x": x(a), "label": str(a) if i % step == 0 else ""}
                      for i, a in enumerate(ks)]
    curve.update(lo=lo, hi=hi, left=left, right=width - right, top=top,
                 bottom=height - bottom, line=" ".join(f"{p['x']},{p['y']}"
                                                       for p in curve["points"]))
    if chosen in ks:  # the label sits inside the frame, even for the last k
        mark = x(chosen)
        curve["mark"] = {"x": mark, "anchor": "end" if mark > width - right - 20 else
                         "start" if mark < left + 20 else "middle"}
    return curve


def label_free_card(store, path: str, g, feats, others: dict) -> dict:
    """Stability, silhouette and interest agreement of a stored clustering (None for each
    where something it needs is missing or stale: the report shows "—", it does not fail)."""
    try:
        # read here, not with the labels: held only while this clustering is scored
        # (text counterparts: clustering_features reads them, in blocks at scale)
        more = store.read_group(path, ("features",)).data
        g = Group({**g.data, **more}, g.attrs)
        E, X = _features(store, g, feats, others)
        n, k = len(E), int(g.attrs["params"].get("k") or int(np.max(g["label"])) + 1)
        size = max(STABILITY_ROWS, PER_CLUSTER * k)
        rows = np.arange(n) if n <= size else np.sort(
            np.random.default_rng(0).choice(n, size, replace=False))
        runs, sample = None, None
        if X is not None:
            sample = X[rows]
            runs = [kmeans(sample, k, seed=s) for s in range(STABILITY_RUNS)]
        if n > SAMPLED_FROM:
            E_rows = sample if X is E else E[rows]
            return label_free.scores(store, g, E, X, runs,
                                     sample=(rows, E_rows, E_rows if X is None else sample))
        return label_free.scores(store, g, E, X, runs)
    except (MdclustError, OSError, KeyError, ValueError):
        return dict.fromkeys(("stability", "stability_ari", "silhouette",
                              "interest_agreement"))


def _features(store, g, feats, others: dict) -> tuple[np.ndarray, object]:
    """(image features of the clustering's model in its row order, its own features)."""
    params = g.attrs["params"]
    key = params["model_key"]
    if key != feats.key:
        if key not in others:
            others[key] = load_image_features(store, key)
        feats = others[key]
    if feats.paths != list(g["path"]):
        raise StaleResult("the images changed since this clustering was made")
    return feats.vectors, clustering_features(store, g, feats)
