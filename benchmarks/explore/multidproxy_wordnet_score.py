"""Dev study behind Multi-DProxy's `--candidate-score auto` (docs/methods/multidproxy.md): the
refinement score "max" (best cosine to a proxy centroid) against "specific" (max less the mean
over the centroids, so that a word near every centroid, a hub, scores low) on
`candidates --source wordnet` lists, every aspect of both worlds, training seeds 0-2.

Dev sets only (benchmarks/quality.py's DEV_SEEDS); the test seeds are refused.

    python benchmarks/explore/multidproxy_wordnet_score.py --workdir /tmp/hub --json rows.json
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

import devrun  # noqa: E402

SCORES = ("max", "specific")


def one_set(world: str, seed: int, n: int, workdir: Path, log) -> list[dict]:
    from sklearn.metrics import normalized_mutual_info_score as nmi

    import mdclust
    from mdclust.core import layout
    from mdclust.core.errors import MdclustError
    from mdclust.methods.multidproxy import MultiDProxyConfig

    rows = []
    for store, _, _, aspect, y, k, km, _ in devrun.aspects(world, seed, n, workdir):
        try:
            mdclust.candidates(store, aspect, source="wordnet", k=k, refresh=True)
            for score in SCORES:
                for run in (0, 1, 2):
                    mdclust.train(store, aspect, method="multidproxy",
                                  config=MultiDProxyConfig(k=k, seed=run, candidate_score=score))
                    res = mdclust.cluster(store, aspect, method="multidproxy")
                    kept = store.read_group(layout.trained(aspect, "multidproxy"))["candidates"]
                    r = {"set": f"{world}-{seed}-{n}", "aspect": aspect, "score": score,
                         "seed": run, "kmeans": km, "nmi": round(nmi(y, res.labels), 3),
                         "kept": list(kept)}
                    rows.append(r)
                    devrun.log_row(log, r)
        except MdclustError as e:  # "slant": one WordNet hyponym, fewer words than k
            log(f"skip {world} {seed} {aspect}: {e}")
    return rows


def summary(rows: list[dict]) -> list[str]:
    by: dict = {}
    for r in rows:
        by.setdefault((r["set"], r["aspect"]), {}).setdefault(r["score"], []).append(r["nmi"])
    out, diffs = [], []
    for (name, aspect), s in sorted(by.items()):
        if all(len(s.get(sc, [])) == 3 for sc in SCORES):
            m, sp = np.mean(s["max"]), np.mean(s["specific"])
            diffs.append(sp - m)
            out.append(f"{name} {aspect}: max {m:.3f}, specific {sp:.3f} ({sp - m:+.3f})")
    d = np.array(diffs)
    out.append(f"{len(d)} cases: specific - max {d.mean():+.3f} ± {d.std() / np.sqrt(len(d)):.3f}"
               f" (standard error); up {int((d > 0.01).sum())}, down {int((d < -0.01).sum())}")
    return out


def main() -> None:
    devrun.main(__doc__, one_set, summary)


if __name__ == "__main__":
    main()
