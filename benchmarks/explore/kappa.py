"""Dev study behind GradNorm's text-counterpart temperature (Eq. 9, docs/methods/gradnorm.md):
the paper's κ = 0.006 as written, against κ in units of the model's own learned temperature
(κ · 100 / exp(logit_scale): the paper's value for CLIP's logit scale of 100), and a few
values around both. Every aspect of both worlds with the quality benchmark's three candidate
sources and the paper's wordnet-all pool; hubs corrected as `--hubness auto` does.

Dev sets only (benchmarks/quality.py's DEV_SEEDS); the test seeds are refused.

    python benchmarks/explore/kappa.py --workdir /tmp/hub --json /tmp/hub/kappa.json
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

KAPPAS = (0.006, 0.012, 0.0261, 0.05, 0.1)  # 0.0261: 0.006 · 100 / 22.98, mdclust-tiny v3's scale


def one_set(world: str, seed: int, n: int, workdir: Path, log) -> list[dict]:

    from mdclust.methods import gradnorm as gn
    from mdclust.methods import hubness as hub

    rows = []
    for store, f, E, aspect, y, k, km, vocab in devrun.aspects(world, seed, n, workdir):
        for source in q.SOURCES + ("wordnet-all",):
            _, R = devrun.filtered(store, f, aspect, source, k, vocab["vocabulary"], world,
                                   workdir)
            S = E @ R.T
            if hub.resolve("auto", source) == "median":
                S = S - np.median(S, 0)
            r = {"world": world, "seed": seed, "aspect": aspect, "source": source, "k": k,
                 "kmeans": km}
            for kappa in KAPPAS:
                r[f"gn_{kappa}"] = devrun.kmeans_nmi(np.hstack([E, gn.softmax(S / kappa) @ R]),
                                                     y, k)
            rows.append(r)
            devrun.log_row(log, r)
    return rows


def summary(rows: list[dict]) -> list[str]:
    out = []
    for (world, source), rs in devrun.by_world_source(rows):
        km = np.array([r["kmeans"] for r in rs])
        cells = [f"{world} {source} ({len(rs)}): k-means {km.mean():.3f}"]
        for kappa in KAPPAS:
            g = np.array([r[f"gn_{kappa}"] for r in rs])
            follows = km >= 0.6
            worst = (g - km)[follows].min() if follows.any() else float("nan")
            cells.append(f"κ {kappa}: {g.mean():.3f} (where k-means ≥ 0.6: worst {worst:+.3f})")
        out.append("; ".join(cells))
    return out


def main() -> None:
    devrun.main(__doc__, one_set, summary)


if __name__ == "__main__":
    main()
