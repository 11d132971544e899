"""`mdclust cluster`: one clustering of the images per (interest, method), stored with the
features it was computed from so that `mdclust eval` can rerun k-means with other seeds."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np

from mdclust.core import layout
from mdclust.core.errors import MdclustError
from mdclust.core.features import load_image_features
from mdclust.core.store import Store, StoreLike, as_store
from mdclust.core.textcache import DEFAULT_TEMPLATE, text_features
from mdclust.methods import METHODS, Method
from mdclust.methods import gradnorm as gn
from mdclust.methods.baselines import kmeans, zero_shot
from mdclust.stages.candidates import load_candidates, validate_interest


@dataclass
class ClusterResult:
    interest: str | None
    method: str
    k: int
    n: int
    sizes: list[int] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict:
        d = asdict(self)
        if not self.names:
            d.pop("names")
        return d


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise MdclustError(f"unknown method {name!r}: use one of {', '.join(METHODS)}")
    return METHODS[name]


def resolve_k(store: Store, interest: str | None, k: int | None, n: int) -> int:
    if k is None and interest:
        k = store.attrs(layout.candidates(interest)).get("k")
    if k is None:
        raise MdclustError("give --k, the number of clusters")
    if k < 2:
        raise MdclustError("--k must be at least 2")
    if k > n:
        raise MdclustError(f"--k {k} is more than the number of images ({n})")
    return int(k)


def cluster(store: StoreLike, interest: str | None = None, *, method: str = "kmeans",
            k: int | None = None, seed: int = 0, model: str | None = None,
            spherical: bool = False, kappa: float = gn.KAPPA,
            template: str = DEFAULT_TEMPLATE) -> ClusterResult:
    store = as_store(store)
    t0 = time.perf_counter()
    m = get_method(method)
    if interest is not None or m.needs_interest:
        interest = validate_interest(interest)
    store.validate()
    store.check_writable()  # before the work, not at commit
    feats = load_image_features(store, model)
    n = len(feats.paths)
    k = resolve_k(store, interest, k, n)
    E = feats.vectors
    data: dict = {"path": feats.paths}
    params = {"k": k, "seed": seed, "model_key": feats.key, "interest": interest}
    names: list[str] = []
    if m.kind == "image":
        labels = kmeans(E, k, seed=seed, spherical=spherical)
        params.update(features="image", spherical=spherical)
    elif m.kind == "trained":
        from mdclust.stages.train import trained_features

        paths, fused = trained_features(store, interest, method)
        if paths != feats.paths:
            raise MdclustError(f"the images changed since {method} was trained; train again")
        labels = kmeans(fused, k, seed=seed)
        params.update(features="trained")
    elif m.kind == "zeroshot":
        words = load_candidates(store, interest)
        T = text_features(store, words, template, model=feats.key)
        labels, used = zero_shot(E, T, k)
        names = [words[i] for i in used]
        data["cluster_name"] = names
        params.update(features="none", template=template, candidates=len(words))
    else:  # laic
        sel = store.read_group(layout.filtered(interest, m.filter_score))
        if sel is None or not sel["noun"]:
            raise MdclustError(f"no filtered nouns for {interest!r}; run `mdclust filter "
                               f"--interest {interest} --method {m.filter_score}` first")
        key = sel.attrs["params"]["model_key"]
        if key != feats.key:
            raise MdclustError(f"the filter ran on {key} features but clustering uses "
                               f"{feats.key}; pass --model {key} or filter again")
        R = text_features(store, sel["noun"], sel.attrs["params"]["template"], model=feats.key)
        V = gn.text_counterpart(E, R, kappa)
        labels = kmeans(np.hstack([E, V]), k, seed=seed)
        data["text_counterpart"] = V.astype(np.float16)
        params.update(features="image+text_counterpart", kappa=kappa,
                      nouns=len(sel["noun"]), filter=m.filter_score)
    data["label"] = np.asarray(labels, dtype=np.int32)
    with store.transaction() as txn:
        txn.put_group(layout.clustering(interest, method), data,
                      {"method": method, "params": params})
    counts = Counter(int(x) for x in labels)
    return ClusterResult(interest, method, k, n, [counts[i] for i in range(max(counts) + 1)],
                         names, round(time.perf_counter() - t0, 3))


def read_clustering(store: Store, interest: str | None, method: str):
    from mdclust.methods import METHODS

    if method not in METHODS:
        raise MdclustError(f"unknown method {method!r}; one of {', '.join(METHODS)}")
    g = store.read_group(layout.clustering(interest, method))
    if g is None:
        where = f"interest {interest!r}" if interest else "the store (no interest)"
        raise MdclustError(f"no {method} clustering for {where}; run `mdclust cluster"
                           + (f" --interest {interest}" if interest else "")
                           + f" --method {method}` first")
    return g


def clustering_features(store: Store, group) -> np.ndarray | None:
    """The features a clustering was computed from, in its row order (None: labels only)."""
    kind = group.attrs["params"].get("features", "none")
    if kind == "none":
        return None
    if "features" in group.data:
        return np.asarray(group["features"], dtype=np.float32)
    feats = load_image_features(store, group.attrs["params"]["model_key"])
    if feats.paths != list(group["path"]):
        raise MdclustError("the images changed since this clustering was made; "
                           "run `mdclust cluster` again")
    if kind == "image":
        return feats.vectors
    if kind == "trained":
        from mdclust.stages.train import trained_features

        interest = group.attrs["params"].get("interest")
        return trained_features(store, interest, group.attrs["method"])[1]
    return np.hstack([feats.vectors, np.asarray(group["text_counterpart"], dtype=np.float32)])
