"""`mdclust filter`: keep the nouns that describe the images (GradNorm, TAC's MSP, SIC's cosine).

Never reads ground-truth labels: pseudo-labels come from k-means on the image features.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from mdclust.core import layout
from mdclust.core.errors import MdclustError
from mdclust.core.features import load_image_features
from mdclust.core.store import StoreLike, as_store
from mdclust.core.textcache import DEFAULT_TEMPLATE, text_features
from mdclust.methods import FILTER_TO_METHOD
from mdclust.methods import gradnorm as gn
from mdclust.stages.candidates import load_candidates, validate_interest

POOLS = ("candidates", "wordnet-all")


@dataclass
class FilterResult:
    interest: str
    method: str
    pool: str
    pool_size: int
    classes: int
    selected: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {**asdict(self), "count": len(self.selected)}


def pseudo_labels(E: np.ndarray, C: int, seed: int) -> np.ndarray:
    from mdclust.methods.baselines import kmeans

    return kmeans(E, C, seed=seed, n_init=3)


def filter_nouns(store: StoreLike, interest: str, *, method: str = "gradnorm",
                 pool: str = "candidates", k: int | None = None, clusters: int | None = None,
                 beta: int = gn.BETA, tau: float = gn.TAU, epochs: int = gn.EPOCHS,
                 lr: float = gn.LR, batch: int = gn.BATCH, min_steps: int = 1000, seed: int = 0,
                 model: str | None = None, template: str = DEFAULT_TEMPLATE,
                 show_progress: bool = False) -> FilterResult:
    store = as_store(store)
    t0 = time.perf_counter()
    interest = validate_interest(interest)
    if method not in FILTER_TO_METHOD:
        raise MdclustError(f"unknown filter method {method!r}: use gradnorm, msp or cosine")
    if pool not in POOLS:
        raise MdclustError(f"unknown --pool {pool!r}: use candidates or wordnet-all")
    if beta < 1 or epochs < 1 or batch < 1 or lr <= 0 or tau <= 0:
        raise MdclustError("--beta, --epochs and --batch must be >= 1; --lr and --tau > 0")
    store.validate()
    store.check_writable()  # before the work, not at commit
    feats = load_image_features(store, model)
    n = len(feats.paths)
    if pool == "candidates":
        words = load_candidates(store, interest)
        k = k or store.attrs(layout.candidates(interest)).get("k")
    else:
        from mdclust.stages.candidates.wordnet import all_nouns

        words = all_nouns()
    if clusters is None:
        if not k:
            raise MdclustError("give --k (clusters wanted) or --clusters (pseudo-classes C)")
        if not 2 <= k <= n:
            raise MdclustError(f"--k must be between 2 and the number of images ({n})")
        clusters = gn.n_pseudo_classes(n, k)
    if not 2 <= clusters <= n:
        raise MdclustError(f"--clusters must be between 2 and the number of images ({n})")

    R = text_features(store, words, template, model=feats.key, show_progress=show_progress)
    E = feats.vectors
    y = pseudo_labels(E, clusters, seed)
    curve: list[float] = []
    if method == "gradnorm":
        W, curve = gn.train_cosine_classifier(E, y, clusters, tau=tau, epochs=epochs, lr=lr,
                                              batch=batch, min_steps=min_steps, seed=seed)
    else:  # TAC and SIC are the tau -> 0 limit: normalised class means (Eq. 12)
        W = gn.centroid_weights(E, y, clusters)
    scores, assign = gn.noun_scores(R.astype(np.float64), W, method, tau)
    keep = gn.select(scores, assign, beta)
    result = FilterResult(interest, method, pool, len(words), clusters,
                          [words[i] for i in keep], [float(scores[i]) for i in keep])
    params = {"pool": pool, "pool_size": len(words), "clusters": clusters, "k": k,
              "beta": beta, "tau": tau, "epochs": epochs, "lr": lr, "batch": batch,
              "min_steps": min_steps, "seed": seed, "template": template,
              "model_key": feats.key, "images": n}
    with store.transaction() as txn:
        txn.put_group(layout.filtered(interest, method), {
            "noun": result.selected,
            "score": np.array(result.scores, dtype=np.float64),
            "pseudo_class": assign[keep].astype(np.int32),
        }, {"method": method, "params": params, "loss_curve": [round(c, 6) for c in curve]})
    result.seconds = round(time.perf_counter() - t0, 3)
    return result
