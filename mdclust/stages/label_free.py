"""Quality of a clustering without labels (`mdclust eval`, `mdclust report`; docs/k.md).

- stability: mean pairwise NMI (and ARI) of the k-means runs `eval` makes with seeds
  0..runs-1 on the clustering's features; 1 means every seed finds the same grouping. It says
  the grouping is there in the features, not that it is the one the user asked for.
- silhouette: cosine silhouette of the stored clustering on its own features (for zeroshot,
  which has none, on the image features): how well the clusters separate, -1 .. 1.
- interest_agreement: how much the clustering says about the images' zero-shot votes over the
  interest's own words (the nouns a GradNorm filter kept, Multi-DProxy's refined candidates,
  else the interest's candidates): the mutual information of cluster and word under each
  image's softmax over the words (the k estimate's votes, temperature 0.03), normalised by the
  mean of the two entropies as NMI is; 0 .. 1. A clustering that follows the interest agrees
  with what its words say; k-means clustering "by colour" that follows shape does not. Soft
  votes over every word rather than each image's one word among the k most chosen (the
  measure until 2026-12-07): an image the words cannot place spreads its vote instead of
  casting a wrong one, and no word is dropped to make k (docs/k.md has the dev measurement,
  Spearman with NMI 0.61 -> 0.84). None when there is no interest or no words. The votes
  correct hubs as `--hubness auto` does for the words' source (median for WordNet lists;
  methods/hubness.py), the same reference for every clustering of the interest.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np

from mdclust.core import layout
from mdclust.core.textcache import DEFAULT_TEMPLATE, text_features
from mdclust.methods import hubness as hub
from mdclust.methods.kselect import silhouette, votes

STABILITY_PAIRS = 45  # 10 runs: every pair


def stability(runs: list[np.ndarray]) -> tuple[float | None, float | None]:
    """Mean pairwise (NMI, ARI) of labellings of the same rows; None for fewer than two."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    pairs = list(combinations(range(len(runs)), 2))[:STABILITY_PAIRS]
    if not pairs:
        return None, None
    nmi = [normalized_mutual_info_score(runs[a], runs[b]) for a, b in pairs]
    ari = [adjusted_rand_score(runs[a], runs[b]) for a, b in pairs]
    return float(np.mean(nmi)), float(np.mean(ari))


def interest_words(store, group) -> tuple[list[str], str] | None:
    """The words a clustering's interest speaks through (see the module docstring)."""
    params = group.attrs.get("params", {})
    interest = params.get("interest")
    if not interest:
        return None
    method = group.attrs.get("method")
    if params.get("features") == "image+text_counterpart":
        g = store.read_group(layout.filtered(interest, params.get("filter", "gradnorm")))
        if g is not None and g["noun"]:
            return list(g["noun"]), g.attrs["params"].get("template", DEFAULT_TEMPLATE)
    if method == "multidproxy":
        g = store.read_group(layout.trained(interest, "multidproxy"), ("candidates",))
        if g is not None and g["candidates"]:
            return (list(g["candidates"]),
                    g.attrs["params"].get("candidate_template", "{}"))
    g = store.read_group(layout.candidates(interest), ("word",))
    if g is not None and g["word"]:
        return list(g["word"]), DEFAULT_TEMPLATE
    return None


def words_source(store, group) -> str | None:
    """Where the words of ``interest_words`` came from: a GradNorm filter's, else the
    interest's candidates."""
    params = group.attrs.get("params", {})
    interest = params.get("interest")
    if params.get("features") == "image+text_counterpart":
        return layout.filtered_source(store, interest, params.get("filter", "gradnorm"))
    return layout.candidates_source(store, interest)


def agreement(store, group, E: np.ndarray, labels: np.ndarray, model_key: str,
              sample: tuple[np.ndarray, np.ndarray] | None = None) -> float | None:
    """The interest agreement of ``labels`` (module docstring); with ``sample`` = (rows,
    E[rows]) on those rows only."""
    words = interest_words(store, group)
    if words is None:
        return None
    T = np.asarray(text_features(store, words[0], words[1], model=model_key), dtype=np.float32)
    if sample is not None:  # the medians too from the rows already read: no pass over a store
        rows, E = sample
        labels = labels[rows]
    shift = hub.word_medians(E, T, hub.resolve("auto", words_source(store, group)))
    return vote_nmi(E, T, np.asarray(labels), shift)


def vote_nmi(E, T: np.ndarray, labels: np.ndarray, shift: np.ndarray | None = None,
             chunk: int = 8192) -> float:
    """NMI between cluster labels and the images' soft votes over the words ``T``: the joint
    distribution of (cluster, word) sums each image's votes into its cluster's row."""
    joint = np.zeros((int(labels.max()) + 1, len(T)))
    for i in range(0, len(E), chunk):  # in chunks: E may be read from the store
        np.add.at(joint, labels[i:i + chunk],
                  votes(np.asarray(E[i:i + chunk], dtype=np.float32), T, shift=shift))
    joint /= max(len(E), 1)
    pc, pw = joint.sum(1), joint.sum(0)
    nz = joint > 0
    mi = float((joint[nz] * np.log(joint[nz] / np.outer(pc, pw)[nz])).sum())
    h = lambda p: float(-(p[p > 0] * np.log(p[p > 0])).sum())  # noqa: E731
    norm = (h(pc) + h(pw)) / 2
    return max(0.0, mi / norm) if norm > 0 else 0.0


def scores(store, group, E: np.ndarray, X, runs: list[np.ndarray] | None,
           seed: int = 0, sample: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
           ) -> dict[str, float | None]:
    """The label-free scores of a stored clustering ``group``: ``E`` the image features in its
    row order, ``X`` its own features (None for zeroshot), ``runs`` the k-means labellings
    `eval` made (None or one: no stability). ``sample`` = (rows, E[rows], own features' rows),
    already read: silhouette and agreement on those rows (the report at scale)."""
    labels = np.asarray(group["label"], dtype=np.int64)
    stab, stab_ari = stability(runs or [])
    key = group.attrs["params"]["model_key"]
    if sample is None:
        sil = silhouette(E if X is None else X, labels, seed)
        agree = agreement(store, group, E, labels, key)
    else:
        rows, E_rows, own_rows = sample
        sil = silhouette(own_rows, labels[rows], seed)
        agree = agreement(store, group, E, labels, key, (rows, E_rows))
    r = lambda v: None if v is None else round(v, 6)  # noqa: E731
    return {"stability": r(stab), "stability_ari": r(stab_ari),
            "silhouette": r(sil), "interest_agreement": r(agree)}
