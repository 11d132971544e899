"""`mdclust cluster`: one clustering of the images per (interest, method), stored with the
features it was computed from so that `mdclust eval` can rerun k-means with other seeds."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from mdclust.core import layout
from mdclust.core.errors import BadInput, StaleResult
from mdclust.core.features import load_image_features
from mdclust.core.layout import candidates_source, read_candidates, validate_interest
from mdclust.core.store import Store, StoreLike, as_store
from mdclust.core.textcache import DEFAULT_TEMPLATE, logit_scale, text_features
from mdclust.methods import Method, get
from mdclust.methods import gradnorm as gn
from mdclust.methods import hubness as hub
from mdclust.methods.baselines import backend_for, kmeans, name_clusters, zero_shot
from mdclust.methods.kselect import KChoice
from mdclust.stages import kchoice


@dataclass
class ClusterResult:
    """One clustering. ``labels[i]`` is the cluster of ``paths[i]``; ``names[j]`` names cluster
    j (a clustering with an interest, or with ``names_from``; empty otherwise). ``to_json()``
    leaves the per-image lists out unless ``rows``:
    `mdclust cluster --json` prints the summary, `mdclust export` the rows."""

    interest: str | None
    method: str
    k: int
    n: int
    sizes: list[int] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    seconds: float = 0.0
    paths: list[str] = field(default_factory=list, repr=False)
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32), repr=False)
    k_choice: dict | None = None  # how k was chosen, with the score of every k tried
    hubness: str | None = None  # median or none where words were compared (hubness.py)
    kappa: float | None = None  # gradnorm/tac/sic: the text-counterpart temperature used

    def to_json(self, rows: bool = False) -> dict:
        d = {"interest": self.interest, "method": self.method, "k": self.k, "n": self.n,
             "sizes": self.sizes, "seconds": self.seconds, "k_choice": self.k_choice}
        if self.hubness:
            d["hubness"] = self.hubness
        if self.kappa is not None:
            d["kappa"] = self.kappa
        if self.names:
            d["names"] = self.names
        if rows:
            d["paths"] = list(self.paths)
            d["labels"] = [int(x) for x in self.labels]
        return d


def _image(store, m, interest, feats, k, seed, **opts):
    labels = kmeans(feats.vectors, k, seed=seed, spherical=opts["spherical"],
                    backend=opts["backend"])
    return labels, {}, {"features": "image", "spherical": opts["spherical"]}, [], \
        _interest_words(store, interest)


def _interest_words(store, interest):
    """The interest's candidates to name clusters with, when it has any (an interest-free
    method run with --interest is a label for the clustering and needs none)."""
    g = store.read_group(layout.candidates(interest)) if interest else None
    return (list(g["word"]), DEFAULT_TEMPLATE) if g is not None and g["word"] else None


def _trained(store, m, interest, feats, k, seed, **opts):
    paths, fused = layout.read_trained(store, interest, m.name)
    if paths != feats.paths:
        raise StaleResult(f"the images changed since {m.name} was trained; train again")
    vocab = None
    if interest and m.name == "multidproxy":  # the words Multi-DProxy kept
        g = store.read_group(layout.trained(interest, m.name))
        vocab = (list(g["candidates"]), g.attrs["params"].get("candidate_template", "{}"))
    else:
        vocab = _interest_words(store, interest)
    labels = kmeans(fused, k, seed=seed, backend=opts["backend"])
    return labels, {}, {"features": "trained"}, [], vocab


def _zeroshot(store, m, interest, feats, k, seed, **opts):
    words = read_candidates(store, interest)
    T = text_features(store, words, opts["template"], model=feats.key)
    how = hub.resolve(opts["hubness"], candidates_source(store, interest))
    labels, used = zero_shot(feats.vectors, T, k,
                             shift=opts["medians"](words, opts["template"], T, how))
    names = [words[i] for i in used]
    return labels, {}, {"features": "none", "template": opts["template"],
                        "candidates": len(words), "hubness": how}, names, None


def _laic(store, m, interest, feats, k, seed, **opts):
    sel = layout.read_filtered(store, interest, m.filter_score)
    key = sel.attrs["params"]["model_key"]
    if key != feats.key:
        raise StaleResult(f"the filter ran on {key} features but clustering uses {feats.key}; "
                          f"pass --model {key} or filter again")
    template = sel.attrs["params"]["template"]
    R = text_features(store, sel["noun"], template, model=feats.key)
    how = hub.resolve(opts["hubness"], layout.filtered_source(store, interest, m.filter_score))
    kappa, scale, rule = opts["kappa"], None, "given"
    if kappa is None:  # the paper's, in units of this model's temperature
        scale, where = logit_scale(store, feats.key)
        kappa = gn.kappa_for(scale)
        if gn.usable_scale(scale):
            rule = "paper, scaled by the logit scale"
        else:
            rule, scale = f"paper (the model's logit scale could not be read: {where})", None
    V, rows = gn.image_text_rows(feats.vectors, R, kappa,
                                 shift=opts["medians"](sel["noun"], template, R, how))
    labels = kmeans(rows, k, seed=seed, backend=opts["backend"])
    return labels, {"text_counterpart": V}, {
        "features": "image+text_counterpart", "kappa": kappa,
        "kappa_rule": rule,
        "logit_scale": scale,
        "nouns": len(sel["noun"]), "filter": m.filter_score, "hubness": how}, [], \
        (list(sel["noun"]), sel.attrs["params"]["template"])


# How each kind in the registry (mdclust.methods) turns stored data into labels.
BY_KIND = {"image": _image, "trained": _trained, "zeroshot": _zeroshot, "laic": _laic}


def cluster(store: StoreLike, interest: str | None = None, *, method: str = "kmeans",
            k: int | None = None, k_max: int | None = None, seed: int = 0,
            model: str | None = None,
            spherical: bool = False, kappa: float | None = None,
            template: str = DEFAULT_TEMPLATE, backend: str = "auto",
            names_from: str | None = None, hubness: str = "auto") -> ClusterResult:
    """Cluster the images for an interest with a method; stores labels and features.

    Parameters
    ----------
    store : Store or path
        The mdclust store (HDF5 file).
    interest : str, optional
        The user's interest (e.g. "color"); required by every method except kmeans and pipcdr.
    method : str
        kmeans, zeroshot, gradnorm, tac, sic, multidproxy or pipcdr (mdclust.methods.METHODS).
    k : int, optional
        Number of clusters; default the k given to `candidates` for the interest, else chosen
        (docs/k.md): a trained method's own k; kmeans by the silhouette of k-means on the
        image features; zeroshot, gradnorm, tac and sic by the images' votes over the
        interest's candidates.
    k_max : int, optional
        The largest k the choice considers; default what the candidates and images allow.
    seed : int
        k-means seed.
    model : str, optional
        Feature set (model key) to use when the store holds several.
    spherical : bool
        kmeans: cluster by cosine on the sphere.
    kappa : float, optional
        gradnorm/tac/sic: text-counterpart temperature. Default: the paper's 0.006 for CLIP's
        logit scale of 100, in units of the model's own (0.006 * 100 / exp(logit_scale):
        0.006 for OpenAI's and LAION's CLIPs, 0.026 for mdclust-tiny).
    template : str
        zeroshot: prompt template for the candidate words.
    backend : str
        k-means implementation: auto (faiss from 20,000 images, else scikit-learn), sklearn
        or faiss.
    names_from : str, optional
        Name the clusters with this interest's candidates (for an interest-free clustering;
        one with an interest is named with its own words).
    hubness : str
        zeroshot, gradnorm, tac, sic and the cluster names: auto, none or median. median takes
        each word's cosines relative to its median over the images, so that words near every
        image (hubs) stop taking them all; auto is median for `--source wordnet` candidates
        only (docs/methods/hubness.md).

    Returns
    -------
    ClusterResult
        Sizes, names and per-image labels with their paths.

    Raises
    ------
    BadInput, MissingStage, StaleResult
        With the one-line message the CLI prints.
    """
    store = as_store(store)
    t0 = time.perf_counter()
    m: Method = get(method)
    backend_for(backend, 0)  # a bad name fails before any work
    hub.resolve(hubness, None)  # likewise
    if kappa is not None and not (np.isfinite(kappa) and kappa > 0):
        raise BadInput(f"--kappa must be a positive number, not {kappa}")
    if interest is not None or m.needs_interest:
        interest = validate_interest(interest)
    store.validate()
    store.check_writable()  # before the work, not at commit
    feats = load_image_features(store, model)
    n = len(feats.paths)
    choice = _choose_k(store, m, interest, feats, k, k_max, seed, hubness)
    k = choice.k
    named_by = None
    if names_from is not None:  # read now: a missing interest fails before any work
        names_from = validate_interest(names_from)
        named_by = (read_candidates(store, names_from), DEFAULT_TEMPLATE)
    medians: dict = {}

    def word_medians(words, word_template, T, how):
        """Each word's median cosine, once per call for the same words (the names of a
        GradNorm clustering are its nouns): at 10M stored images a sample reads most of
        the file."""
        key = (tuple(words), word_template, how)
        if key not in medians:
            medians[key] = hub.word_medians(feats.vectors, T, how)
        return medians[key]

    labels, extra, params, names, vocab = BY_KIND[m.kind](
        store, m, interest, feats, k, seed, spherical=spherical, kappa=kappa,
        template=template, backend=backend, hubness=hubness, medians=word_medians)
    labels = np.asarray(labels, dtype=np.int32)
    if vocab is None and named_by is not None:
        vocab = named_by
        params["names_from"] = names_from
    if vocab is not None and not names:
        words, word_template = vocab
        T = text_features(store, words, word_template, model=feats.key)
        how = params.get("hubness") or hub.resolve(
            hubness, candidates_source(store, names_from or interest))
        params["names_hubness"] = how
        pick, share = name_clusters(feats.vectors, labels, int(labels.max()) + 1, T,
                                    shift=word_medians(words, word_template, T, how))
        names = [words[i] for i in pick]
        extra["name_share"] = share.astype(np.float32)
    if names:
        extra["cluster_name"] = names
    params = {"k": k, "seed": seed, "model_key": feats.key, "interest": interest,
              "backend": backend_for(backend, n), "k_choice": choice.to_json(), **params}
    with store.transaction() as txn:
        txn.put_group(layout.clustering(interest, method),
                      {"path": feats.paths, **extra, "label": labels},
                      {"method": method, "params": params})
    return ClusterResult(interest, method, k, n, np.bincount(labels).tolist(), names,
                         round(time.perf_counter() - t0, 3), list(feats.paths), labels,
                         choice.to_json(), params.get("hubness") or params.get("names_hubness"),
                         params.get("kappa"))


def _choose_k(store, m: Method, interest, feats, k, k_max, seed, hubness) -> KChoice:
    """The given k, else: a trained method's own; interest-free kmeans by silhouette on the
    image features; interest-driven by the images' votes over the interest's words (its
    candidates; for a filter run on the wordnet-all pool without candidates, the kept nouns)."""
    n = len(feats.paths)
    if m.kind == "trained":
        if k is not None:
            return KChoice(kchoice.given(store, interest, k, n).k, "given")
        g = store.attrs(layout.trained(interest, m.name))
        if not g:
            layout.read_trained(store, interest, m.name)  # raises the one-line MissingStage
        trained_k = int(g["params"]["k"])
        how = g["params"].get("k_choice") or {}
        return KChoice(trained_k, "trained", how.get("k_max", 0),
                       {int(a): b for a, b in how.get("scores", {}).items()}, how.get("rows", 0))
    if m.kind == "image":
        return kchoice.for_features(store, interest, k, feats.vectors, k_max=k_max, seed=seed)
    words = source = None
    if m.kind == "laic" and store.read_group(layout.candidates(interest), ()) is None:
        words, source = list(layout.read_filtered(store, interest, m.filter_score)["noun"]), \
            "wordnet-all"
    return kchoice.for_interest(store, interest, k, n, feats.vectors, feats.key, k_max=k_max,
                                words=words, source=source, seed=seed, hubness=hubness)


def read_clustering(store: Store, interest: str | None, method: str,
                    only: tuple[str, ...] | None = None):
    """The stored clustering group (a checked method name; MissingStage when absent)."""
    get(method)
    return layout.read_clustering(store, interest, method, only)



def load_clustering(store: StoreLike, interest: str | None = None, *,
                    method: str = "kmeans") -> ClusterResult:
    """A stored clustering as a ClusterResult: per-image labels with their paths, sizes, and
    the cluster names when the method gives them.

    Parameters
    ----------
    store : Store or path
        Where `mdclust cluster` stored it.
    interest : str, optional
        Its interest (none for an interest-free clustering).
    method : str
        Its method.
    """
    store = as_store(store)
    if interest is not None:
        interest = validate_interest(interest)
    g = read_clustering(store, interest, method, only=layout.CLUSTERING_LABELS)
    labels = np.asarray(g["label"], dtype=np.int32)
    params = g.attrs["params"]
    return ClusterResult(interest, method, int(params["k"]), len(labels),
                         np.bincount(labels).tolist(), list(g.get("cluster_name") or []),
                         0.0, list(g["path"]), labels, params.get("k_choice"),
                         params.get("hubness") or params.get("names_hubness"),
                         params.get("kappa"))
