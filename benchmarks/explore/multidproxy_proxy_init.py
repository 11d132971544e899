"""Dev study: Multi-DProxy's proxy start, w'_i = f_t("*") for every image (the paper, the
default) against w'_i = v_i (each image starts from its own zero-shot reading of the
candidates), with the LLM-style lists and `candidates --source wordnet` lists, every aspect of
both worlds, training seed 0 or those given (docs/methods/multidproxy.md).

Dev sets only (benchmarks/quality.py's DEV_SEEDS); the test seeds are refused.

    python benchmarks/explore/multidproxy_proxy_init.py --workdir /tmp/hub --json rows.json \
        [--sources llm wordnet] [--train-seeds 0 1 2]
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

INITS = ("star", "image")
OPTIONS = {"--sources": {"nargs": "+", "default": ["llm", "wordnet"],
                         "help": "candidate sources [llm wordnet]"},
           "--train-seeds": {"type": int, "nargs": "+", "default": [0],
                             "help": "Multi-DProxy training seeds [0]"}}


def one_set(world: str, seed: int, n: int, workdir: Path, log, sources: list[str],
            train_seeds: list[int]) -> list[dict]:
    from sklearn.metrics import normalized_mutual_info_score as nmi

    import mdclust
    from mdclust.core import layout
    from mdclust.methods.multidproxy import config_for

    rows = []
    for store, _, _, aspect, y, k, km, voc in devrun.aspects(world, seed, n, workdir):
        for source in sources:
            if q.usable_words(store, aspect, source, k, voc["vocabulary"], world, workdir, log,
                              f"{world} {seed} {aspect}") is None:
                continue
            for run in train_seeds:
                for init in INITS:
                    mdclust.train(store, aspect, method="multidproxy",
                                  config=config_for(k, proxy_init=init, seed=run))
                    res = mdclust.cluster(store, aspect, method="multidproxy")
                    kept = store.read_group(layout.trained(aspect, "multidproxy"))["candidates"]
                    r = {"set": f"{world}-{seed}-{n}", "aspect": aspect, "source": source,
                         "seed": run, "init": init, "kmeans": km,
                         "nmi": round(nmi(y, res.labels), 3), "kept": list(kept)}
                    rows.append(r)
                    devrun.log_row(log, r)
    return rows


def summary(rows: list[dict]) -> list[str]:
    runs: dict = {}
    for r in rows:  # mean over the training seeds of a case
        runs.setdefault((r["source"], r["set"], r["aspect"]), {}).setdefault(
            r["init"], []).append(r["nmi"])
    by = {key: {i: float(np.mean(v)) for i, v in s.items()} for key, s in runs.items()}
    out = []
    for source in sorted({src for src, _, _ in by}):
        d = np.array([s["image"] - s["star"] for (src, _, _), s in sorted(by.items())
                      if src == source and len(s) == 2])
        base = np.mean([s["star"] for (src, _, _), s in by.items() if src == source
                        and len(s) == 2])
        if len(d):
            out.append(f"{source}: {len(d)} cases, star {base:.3f}, image - star "
                       f"{d.mean():+.3f} ± {d.std() / np.sqrt(len(d)):.3f} (standard error); "
                       f"up {int((d > 0.01).sum())}, down {int((d < -0.01).sum())}")
    for (source, name, aspect), s in sorted(by.items()):
        if len(s) == 2:
            out.append(f"  {source} {name} {aspect}: star {s['star']:.3f}, image "
                       f"{s['image']:.3f} ({s['image'] - s['star']:+.3f})")
    return out


def main() -> None:
    devrun.main(__doc__, one_set, summary, OPTIONS)


if __name__ == "__main__":
    main()
