"""Quality of a clustering without labels (`mdclust eval`, `mdclust report`; docs/k.md).

- stability: mean pairwise NMI (and ARI) of the k-means runs `eval` makes with seeds
  0..runs-1 on the clustering's features; 1 means every seed finds the same grouping. It says
  the grouping is there in the features, not that it is the one the user asked for.
- silhouette: cosine silhouette of the stored clustering on its own features (for zeroshot,
  which has none, on the image features): how well the clusters separate, -1 .. 1.
- interest_agreement: NMI between the clustering and the zero-shot assignment of the images
  over the interest's own words (the nouns a GradNorm filter kept, Multi-DProxy's refined
  candidates, else the interest's candidates), restricted to the k most chosen words. A
  clustering that follows the interest agrees with what its words say; k-means clustering "by
  colour" that follows shape does not. None when there is no interest or no words. The
  zero-shot reference corrects hubs as `--hubness auto` does for the words' source (median
  for WordNet lists; methods/hubness.py), the same reference for every clustering of the
  interest whatever `--hubness` each was run with.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np

from mdclust.core import layout
from mdclust.core.textcache import DEFAULT_TEMPLATE, text_features
from mdclust.methods import hubness as hub
from mdclust.methods.baselines import nearest_words, zero_shot, zero_shot_words
from mdclust.methods.kselect import silhouette

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
    """Where the words of ``interest_words`` came from: a GradNorm filter's pool, else the
    interest's candidates."""
    params = group.attrs.get("params", {})
    interest = params.get("interest")
    if params.get("features") == "image+text_counterpart":
        attrs = store.attrs(layout.filtered(interest, params.get("filter", "gradnorm")))
        if attrs.get("params", {}).get("pool") == "wordnet-all":
            return "wordnet-all"
    return layout.candidates_source(store, interest)


def agreement(store, group, E: np.ndarray, labels: np.ndarray, model_key: str,
              sample: tuple[np.ndarray, np.ndarray] | None = None) -> float | None:
    """NMI of ``labels`` with the zero-shot assignment over the interest's words; with
    ``sample`` = (rows, E[rows]) on those rows only, the words chosen on every row as without
    it (so a zeroshot clustering still agrees with itself exactly)."""
    from sklearn.metrics import normalized_mutual_info_score

    words = interest_words(store, group)
    if words is None:
        return None
    T = np.asarray(text_features(store, words[0], words[1], model=model_key), dtype=np.float32)
    k = max(2, int(labels.max()) + 1)
    shift = hub.word_medians(E, T, hub.resolve("auto", words_source(store, group)))
    if sample is None:
        zs, _ = zero_shot(E, T, k, shift=shift)
        return float(normalized_mutual_info_score(zs, labels))
    rows, E_rows = sample
    used = zero_shot_words(E, T, k, shift=shift)
    zs = nearest_words(E_rows, T[used], shift=None if shift is None else shift[used])
    return float(normalized_mutual_info_score(zs, labels[rows]))


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
