"""`mdclust filter`: keep the nouns that describe the images (GradNorm, TAC's MSP, SIC's cosine).

Never reads ground-truth labels: pseudo-labels come from k-means on the image features.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from mdclust.core import layout
from mdclust.core.errors import BadInput
from mdclust.core.features import load_image_features
from mdclust.core.layout import read_candidates, validate_interest
from mdclust.core.store import StoreLike, as_store
from mdclust.core.textcache import DEFAULT_TEMPLATE, text_features
from mdclust.methods import check_filter
from mdclust.methods import gradnorm as gn
from mdclust.stages import kchoice

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
    k_choice: dict | None = None  # the K that set C, and how it was chosen
    sampled: int = 0  # images the nouns were scored on, when a sample (0: all)

    def to_json(self) -> dict:
        return {**asdict(self), "count": len(self.selected)}


def filter_nouns(store: StoreLike, interest: str, *, method: str = "gradnorm",
                 pool: str = "candidates", k: int | None = None, k_max: int | None = None,
                 clusters: int | None = None,
                 beta: int = gn.BETA, tau: float = gn.TAU, epochs: int = gn.EPOCHS,
                 lr: float = gn.LR, batch: int = gn.BATCH, min_steps: int = 1000, seed: int = 0,
                 model: str | None = None, template: str = DEFAULT_TEMPLATE,
                 sample: int | None = gn.SAMPLE, show_progress: bool = False) -> FilterResult:
    """Select the nouns that describe the images (GradNorm; TAC/SIC as special cases).

    Parameters
    ----------
    store : Store or path
        The mdclust store (HDF5 file).
    interest : str
        The user's interest whose candidates are filtered.
    method : str
        gradnorm, msp (TAC) or cosine (SIC).
    pool : str
        candidates (the interest's) or wordnet-all.
    k : int, optional
        Clusters wanted K; sets C = N/600 or 3K; default the candidates' k, else chosen by
        the images' votes over the candidates (with the wordnet-all pool and no candidates:
        by the silhouette of k-means on the image features; docs/k.md).
    k_max : int, optional
        The largest K the choice considers.
    clusters : int, optional
        Pseudo-classes C, overriding the rule.
    beta : int
        Nouns kept per pseudo-class (paper: 5).
    tau : float
        Classifier temperature (paper: 1/0.08).
    epochs : int
        Classifier epochs (Adam).
    lr : float
        Classifier learning rate.
    batch : int
        Classifier batch size.
    min_steps : int
        At least this many optimiser steps (small sets).
    seed : int
        Seed of the pseudo-label k-means and the classifier.
    model : str, optional
        Feature set (model key) to use when the store holds several.
    template : str
        Text prompt for the nouns.
    sample : int, optional
        Above this many images, pseudo-labels and classifier use a seeded sample of this many,
        with at most sample / 300 pseudo-classes (linear in N; docs/methods/gradnorm.md);
        None scores on every image, the paper as written. Default 60,000.
    show_progress : bool
        Show progress on stderr.

    Returns
    -------
    FilterResult
    """
    store = as_store(store)
    t0 = time.perf_counter()
    interest = validate_interest(interest)
    check_filter(method)
    if pool not in POOLS:
        raise BadInput(f"unknown --pool {pool!r}: use candidates or wordnet-all")
    if beta < 1 or epochs < 1 or batch < 1 or lr <= 0 or tau <= 0:
        raise BadInput("--beta, --epochs and --batch must be >= 1; --lr and --tau > 0")
    store.validate()
    store.check_writable()  # before the work, not at commit
    feats = load_image_features(store, model)
    n = len(feats.paths)
    choice = None
    if pool == "candidates":
        words = read_candidates(store, interest)
        source = layout.candidates_source(store, interest)
    else:
        source = "wordnet-all"
        from mdclust.stages.candidates.wordnet import all_nouns

        words = all_nouns()
    if clusters is None:
        if store.read_group(layout.candidates(interest), ("word",)) is not None:
            choice = kchoice.for_interest(store, interest, k, n, feats.vectors, feats.key,
                                          k_max=k_max, seed=seed)
        else:  # the paper's interest-free pool, for an interest with no candidates
            choice = kchoice.for_features(store, interest, k, feats.vectors, k_max=k_max,
                                          seed=seed)
        k = choice.k
        clusters = gn.n_pseudo_classes(n, k)
        rows, clusters = gn.sampled(n, clusters, sample, seed, k)
    elif k is not None and not 2 <= k <= n:
        raise BadInput(f"--k must be between 2 and the number of images ({n})")
    if not 2 <= clusters <= n:
        raise BadInput(f"--clusters must be between 2 and the number of images ({n})")
    if sample is not None and sample < 2:
        raise BadInput("--sample must be at least 2 images, or all")
    if choice is None:  # --clusters given: the sample, if any, keeps that C
        rows, _ = gn.sampled(n, clusters, sample, seed)
    E = feats.vectors if rows is None else feats.vectors[rows]

    R = text_features(store, words, template, model=feats.key, show_progress=show_progress)
    cfg = gn.LaICConfig(k=k or 2, score=method, clusters=clusters, beta=beta, tau=tau,
                        epochs=epochs, lr=lr, batch=batch, min_steps=min_steps, seed=seed)
    keep, kept_scores, kept_class, curve = gn.filter_nouns(E, R, cfg)
    result = FilterResult(interest, method, pool, len(words), clusters,
                          [words[i] for i in keep], [float(x) for x in kept_scores],
                          k_choice=choice.to_json() if choice else None,
                          sampled=0 if rows is None else len(rows))
    params = {"pool": pool, "source": source, "pool_size": len(words), "clusters": clusters,
              "k": k,
              "k_choice": result.k_choice,
              "beta": beta, "tau": tau, "epochs": epochs, "lr": lr, "batch": batch,
              "min_steps": min_steps, "seed": seed, "template": template,
              "model_key": feats.key, "images": n,
              "sample": "all" if sample is None else sample, "sampled": result.sampled}
    with store.transaction() as txn:
        txn.put_group(layout.filtered(interest, method), {
            "noun": result.selected,
            "score": np.array(result.scores, dtype=np.float64),
            "pseudo_class": kept_class.astype(np.int32),
        }, {"method": method, "params": params, "loss_curve": [round(c, 6) for c in curve]})
    result.seconds = round(time.perf_counter() - t0, 3)
    return result
