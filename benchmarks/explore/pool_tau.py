"""Dev study: GradNorm with the paper's interest-free pool (every WordNet noun, C = 3K, beta = 5)
when the nouns are scored at another temperature than the classifier's tau = 12.5: in the
model's units (tau * logit_scale / 100, as kappa is taken), 1, and TAC's and SIC's scores.
Per case: NMI of k-means on [E; V] (seeds 0-2) and the share of kept nouns that are words of
the aspect (its values, WordNet's hyponyms of its name). docs/methods/gradnorm.md.

Dev sets only (benchmarks/quality.py's DEV_SEEDS); the test seeds are refused.

    python benchmarks/explore/pool_tau.py --workdir /tmp/hub --json rows.json
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

RULES = ("paper", "model units", "tau 1", "msp", "cosine")  # the summary's order


def one_set(world: str, seed: int, n: int, workdir: Path, log) -> list[dict]:
    from mdclust.core.textcache import logit_scale, text_features
    from mdclust.methods import gradnorm as gn
    from mdclust.methods.baselines import kmeans
    from mdclust.stages.candidates.wordnet import all_nouns

    words, R, rows = all_nouns(), None, []
    for store, f, E, aspect, y, k, km, voc in devrun.aspects(world, seed, n, workdir):
        if R is None:  # once per set: the pool's features and the scores' temperatures
            R = np.asarray(text_features(store, words, model=f.key), dtype=np.float64)
            scale = logit_scale(store, f.key)[0]
            rules = {"paper": ("gradnorm", gn.TAU),
                     "model units": ("gradnorm", gn.TAU * scale / 100),
                     "tau 1": ("gradnorm", 1.0), "msp": ("msp", gn.TAU),
                     "cosine": ("cosine", gn.TAU)}
        C = 3 * k
        W, _ = gn.train_cosine_classifier(E, kmeans(E.astype(np.float32), C, seed=0, n_init=3),
                                          C, min_steps=1000, seed=0)
        mine = q.aspect_words(aspect, voc["vocabulary"])
        for rule, (score, tau) in rules.items():
            keep = gn.select(*gn.noun_scores(R, W, score, tau))
            kept = [words[i] for i in keep]
            V = gn.text_counterpart(E, R[keep], gn.kappa_for(scale))
            r = {"set": f"{world}-{seed}-{n}", "aspect": aspect, "rule": rule, "kmeans": km,
                 "nmi": devrun.kmeans_nmi(np.hstack([E, V]), y, k),
                 "of_aspect": float(np.mean([w.lower() in mine for w in kept]))}
            devrun.log_row(log, r)
            rows.append({**r, "kept_first": kept[:10]})
    return rows


def summary(rows: list[dict]) -> list[str]:
    out = []
    for world in sorted({r["set"].split("-")[0] for r in rows}):
        mine = [r for r in rows if r["set"].startswith(world)]
        km = np.mean([r["kmeans"] for r in mine if r["rule"] == "paper"])
        for rule in RULES:
            rr = [r for r in mine if r["rule"] == rule]
            out.append(f"{world} {rule:<11}: NMI {np.mean([r['nmi'] for r in rr]):.3f} "
                       f"(k-means {km:.3f}), of the aspect "
                       f"{np.mean([r['of_aspect'] for r in rr]):.3f}, {len(rr)} cases")
    return out


def main() -> None:
    devrun.main(__doc__, one_set, summary)


if __name__ == "__main__":
    main()
