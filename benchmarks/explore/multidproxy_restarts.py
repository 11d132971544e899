"""Dev study of Multi-DProxy's `--restarts` (docs/methods/multidproxy.md, "Restarts"): seeds
0, 1, 2 trained one by one with the defaults of `mdclust train` on the LLM-style lists, every
aspect of both worlds; for each run its NMI (`eval`, 10 k-means seeds), final loss, cosine
silhouette of the fused features and interest agreement. Then which run each label-free rule
would keep: the shipped rule (loss within 1 % of the lowest, then silhouette), the silhouette
alone, the interest agreement alone, and the tie then the agreement.

Dev sets only (benchmarks/quality.py's DEV_SEEDS); the test seeds are refused.

    python benchmarks/explore/multidproxy_restarts.py --workdir /tmp/hub --json rows.json
    python benchmarks/explore/multidproxy_restarts.py --summary rows.json
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

import devrun  # noqa: E402
import quality as q  # noqa: E402

SEEDS = (0, 1, 2)


def one_set(world: str, seed: int, n: int, workdir: Path, log) -> list[dict]:
    from mdclust.core import layout
    from mdclust.methods.multidproxy import config_for
    from mdclust.stages.cluster import cluster
    from mdclust.stages.evaluate import evaluate
    from mdclust.stages.train import train
    from mdclust.stages.train_multidproxy import _silhouette

    vocab, store = q.embedded_set(seed, n, workdir, world)
    rows = []
    for aspect in vocab:
        k = len(vocab[aspect]["present"])
        q.source_words(store, aspect, "llm", k, vocab[aspect]["vocabulary"], world, workdir)
        for s in SEEDS:
            res = train(store, aspect, method="multidproxy", config=config_for(k, seed=s))
            cluster(store, aspect, method="multidproxy")
            ev = evaluate(store, aspect, method="multidproxy", aspect=aspect, runs=10).to_json()
            fused = layout.read_trained(store, aspect, "multidproxy")[1]
            r = {"world": world, "seed": seed, "aspect": aspect, "run": s, "nmi": ev["nmi"],
                 "agreement": ev["interest_agreement"], "stability": ev["stability"],
                 "loss": res.final_loss, "silhouette": _silhouette(fused, k, s)}
            rows.append(r)
            log(json.dumps(r))
    return rows


def summary(rows: list[dict]) -> list[str]:
    from mdclust.stages.train_multidproxy import LOSS_TIE, _pick_restart

    by = defaultdict(list)
    for r in rows:
        by[(r["world"], r["seed"], r["aspect"])].append(r)

    def shipped(rs):  # train's own rule, on rows named as it names them
        seed = _pick_restart([{"seed": r["run"], "final_loss": r["loss"],
                               "silhouette": r["silhouette"]} for r in rs])["seed"]
        return next(r for r in rs if r["run"] == seed)

    def tied(rs):
        lowest = min(r["loss"] for r in rs)
        return [r for r in rs if r["loss"] <= lowest + LOSS_TIE * abs(lowest)]

    rules = {"shipped (tie, then silhouette)": shipped,
             "silhouette": lambda rs: max(rs, key=lambda r: r["silhouette"]),
             "interest agreement": lambda rs: max(rs, key=lambda r: r["agreement"]),
             "tie, then agreement": lambda rs: max(tied(rs), key=lambda r: r["agreement"]),
             "seed 0 (no restarts)": lambda rs: rs[0]}
    cases = [rs for rs in by.values() if len(rs) == len(SEEDS)]
    single = np.array([np.mean([r["nmi"] for r in rs]) for rs in cases])
    out = [f"{len(cases)} cases; mean NMI of one run (over its seeds) {single.mean():.3f}, "
           f"best seed {np.mean([max(r['nmi'] for r in rs) for rs in cases]):.3f}"]
    for name, pick in rules.items():
        d = np.array([pick(rs)["nmi"] for rs in cases]) - single
        out.append(f"{name}: {np.mean(single + d):.3f}, {d.mean():+.3f} ± "
                   f"{d.std(ddof=1) / np.sqrt(len(d)):.3f} (s.e.) against one run; better in "
                   f"{(d > 0.005).sum()}, worse in {(d < -0.005).sum()}")
    return out


def main() -> None:
    devrun.main(__doc__, one_set, summary)


if __name__ == "__main__":
    main()
