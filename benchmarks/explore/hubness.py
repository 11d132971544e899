"""Dev study behind `cluster --hubness` (docs/methods/hubness.md): each word's cosines taken
as they are, or relative to a statistic of them over the images (mean, median, 25th or 10th
percentile), in zero-shot, in GradNorm's text counterparts (Eq. 9) and in the k estimate by
votes; every aspect of both worlds with the three candidate sources of the quality benchmark,
plus GradNorm on the paper's wordnet-all pool.

Dev sets only (benchmarks/quality.py's DEV_SEEDS); the test seeds are refused.

    python benchmarks/explore/hubness.py --workdir /tmp/hub --json /tmp/hub/dev.json
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

HOWS = ("plain", "mean", "median", "q25", "q10")


def centred(L: np.ndarray, how: str) -> np.ndarray:
    """Cosines (images x words) less each word's statistic over the images."""
    stat = {"plain": lambda a: 0, "mean": lambda a: a.mean(0),
            "median": lambda a: np.median(a, 0),
            "q25": lambda a: np.quantile(a, 0.25, axis=0),
            "q10": lambda a: np.quantile(a, 0.10, axis=0)}[how]
    return L - stat(L)


def one_set(world: str, seed: int, n: int, workdir: Path, log) -> list[dict]:
    from sklearn.metrics import normalized_mutual_info_score as nmi

    from mdclust.core.textcache import text_features
    from mdclust.methods import gradnorm as gn
    from mdclust.methods.baselines import zero_shot
    from mdclust.methods.kselect import by_votes

    rows = []
    for store, f, E, aspect, y, k, km, vocab in devrun.aspects(world, seed, n, workdir):
        for source in q.SOURCES + ("wordnet-all",):
            r = {"world": world, "seed": seed, "aspect": aspect, "source": source, "k": k,
                 "kmeans": km}
            words, R = devrun.filtered(store, f, aspect, source, k, vocab["vocabulary"],
                                       world, workdir)
            if words is not None:
                T = np.asarray(text_features(store, words, model=f.key), dtype=np.float64)
                S = E @ T.T
                for how in HOWS:
                    r["zs_" + how] = nmi(y, zero_shot(centred(S, how), np.eye(len(T)), k)[0])
                for how in ("plain", "median"):  # k by votes: a shift is one more column
                    shift = np.zeros(len(T)) if how == "plain" else np.median(S, 0)
                    E2 = np.hstack([E, np.ones((len(E), 1))]).astype(np.float32)
                    T2 = np.hstack([T, -shift[:, None]]).astype(np.float32)
                    r["k_" + how] = by_votes(E2, T2, seed=0).k
            for how in HOWS:
                V = gn.softmax(centred(E @ R.T, how) / gn.KAPPA) @ R
                r["gn_" + how] = devrun.kmeans_nmi(np.hstack([E, V]), y, k)
            rows.append(r)
            devrun.log_row(log, r)
    return rows


def summary(rows: list[dict]) -> list[str]:
    out = []
    for (world, source), rs in devrun.by_world_source(rows):
        km = np.mean([r["kmeans"] for r in rs])
        cells = [f"{world} {source} ({len(rs)} cases): k-means {km:.3f}"]
        for part in ("zs_", "gn_"):
            vals = [f"{h} {np.mean([r[part + h] for r in rs]):.3f}" for h in HOWS
                    if part + h in rs[0]]
            if vals:
                cells.append(("zero-shot " if part == "zs_" else "gradnorm ") + ", ".join(vals))
        if "k_plain" in rs[0]:
            for h in ("plain", "median"):
                d = np.array([r["k_" + h] - r["k"] for r in rs])
                cells.append(f"k {h}: exact {np.mean(d == 0):.2f}, within 1 "
                             f"{np.mean(abs(d) <= 1):.2f}")
        out.append("; ".join(cells))
    return out


def main() -> None:
    devrun.main(__doc__, one_set, summary)


if __name__ == "__main__":
    main()
