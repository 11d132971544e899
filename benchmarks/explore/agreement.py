"""Dev study behind the label-free interest agreement (docs/k.md, "How the agreement was
chosen"): forms of agreement between a clustering and the zero-shot reading of the interest's
words, each ranked against NMI with the interest's labels (Spearman) over every clustering of
the dev sets: zeroshot, gradnorm, tac and sic per interest (LLM-style lists, k given), and
k-means at every aspect's k scored against every interest.

Dev sets only (benchmarks/quality.py's DEV_SEEDS).

    python benchmarks/explore/agreement.py --workdir /tmp/hub --n 400
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

import devrun  # noqa: E402
import quality as q  # noqa: E402

FORMS = ("argmax_topk", "argmax_all", "homogeneity", "completeness", "soft_mi_over_hc",
         "soft_nmi")


def forms(E, T, labels, k) -> dict:
    from sklearn.metrics import completeness_score, homogeneity_score
    from sklearn.metrics import normalized_mutual_info_score as nmi

    from mdclust.methods.baselines import nearest_words, zero_shot
    from mdclust.methods.kselect import votes
    from mdclust.stages.label_free import vote_nmi

    top, every = zero_shot(E, T, k)[0], nearest_words(E, T)
    joint = np.eye(labels.max() + 1)[labels].T @ votes(E, T) / len(E)
    pc, pw = joint.sum(1), joint.sum(0)
    nz = joint > 0
    mi = (joint[nz] * np.log(joint[nz] / np.outer(pc, pw)[nz])).sum()
    hc = -(pc[pc > 0] * np.log(pc[pc > 0])).sum()
    return {"argmax_topk": nmi(top, labels), "argmax_all": nmi(every, labels),
            "homogeneity": homogeneity_score(labels, every),
            "completeness": completeness_score(labels, every),
            "soft_mi_over_hc": mi / hc if hc > 0 else 0.0, "soft_nmi": vote_nmi(E, T, labels)}


def one_set(world: str, seed: int, n: int, workdir: Path, log) -> list[dict]:
    from sklearn.metrics import normalized_mutual_info_score as nmi

    import mdclust
    from mdclust.core import layout
    from mdclust.core.textcache import text_features

    vocab, store, f, _, truth = devrun.dev_set(world, seed, n, workdir)
    ks = sorted({len(v["present"]) for v in vocab.values()})
    by_k = {k: mdclust.cluster(store, method="kmeans", k=k).labels for k in ks}
    text = lambda words: np.asarray(text_features(store, words, model=f.key), np.float32)  # noqa: E731
    rows = []
    for aspect in vocab:
        k = len(vocab[aspect]["present"])
        y = truth(aspect)
        mdclust.candidates(store, aspect, from_file=q.interest_file(aspect, world), k=k,
                           refresh=True)
        T = text(layout.read_candidates(store, aspect))
        for score in ("gradnorm", "msp", "cosine"):
            mdclust.filter_nouns(store, aspect, method=score)
        for method, score in (("zeroshot", None), ("gradnorm", "gradnorm"), ("tac", "msp"),
                              ("sic", "cosine")):
            labels = mdclust.cluster(store, aspect, method=method).labels
            words = T if score is None else text(list(layout.read_filtered(store, aspect,
                                                                          score)["noun"]))
            rows.append({"world": world, "seed": seed, "aspect": aspect, "method": method,
                         "nmi": nmi(y, labels), **forms(f.vectors, words, labels, k)})
        for kk, labels in by_k.items():
            rows.append({"world": world, "seed": seed, "aspect": aspect,
                         "method": f"kmeans k={kk}", "nmi": nmi(y, labels),
                         **forms(f.vectors, T, labels, kk)})
    return rows


def summary(rows: list[dict]) -> list[str]:
    from scipy.stats import spearmanr

    driven = [r for r in rows if not r["method"].startswith("kmeans")]
    out = [f"{len(rows)} clusterings ({len(driven)} interest-driven); Spearman with NMI:"]
    for form in FORMS:
        rho = lambda rs: spearmanr([r[form] for r in rs], [r["nmi"] for r in rs])[0]  # noqa: E731
        out.append(f"  {form:<16} all {rho(rows):.3f}   interest-driven {rho(driven):.3f}")
    return out


def main() -> None:
    devrun.main(__doc__, one_set, summary)


if __name__ == "__main__":
    main()
