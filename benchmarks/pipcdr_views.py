"""Which image views should PIPCDR make by default? Measured on the quality benchmark's *dev*
sets only (benchmarks/quality.py DEV_SEEDS), against k-means on the same features.

For each dev set and aspect: k-means on the image features, and PIPCDR (defaults) with views
made by each augmentation set in turn (stored once per set, as `embed --views 8 --augment A`
does) and with feature-space views (`--views none`). NMI of `mdclust eval` (10 k-means seeds),
and of k-means on the input features concatenated with PIPCDR's ("+ input", a residual reading
of the final clustering).

    python benchmarks/pipcdr_views.py [--seeds 1 2] [--aspects color shape count]
                                      [--views crop+flip none]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks.quality import DEV_SEEDS, TEST_SEEDS, interest_file  # noqa: E402

AUGMENTS = ("crop,flip", "flip,rotate", "crop,rotate")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=list(DEV_SEEDS))
    ap.add_argument("--aspects", nargs="+", default=["color", "shape", "count"])
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--views", nargs="+", default=[a.replace(",", "+") for a in AUGMENTS] +
                    ["none"])
    args = ap.parse_args()
    if set(args.seeds) & set(TEST_SEEDS):
        raise SystemExit("dev seeds only: this script chooses a default")
    from mdclust.core.features import load_image_features
    from mdclust.core.layout import read_trained
    from mdclust.core.metrics import scores
    from mdclust.core.store import Store
    from mdclust.datasets import generate_shapes, read_vocabulary
    from mdclust.methods.baselines import kmeans
    from mdclust.methods.pipcdr_config import PipcdrConfig
    from mdclust.stages.candidates import candidates
    from mdclust.stages.cluster import cluster
    from mdclust.stages.embed import embed
    from mdclust.stages.evaluate import evaluate
    from mdclust.stages.train import train

    rows: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            images = Path(tmp) / f"set-{seed}"
            generate_shapes(images, n=args.n, seed=seed)
            vocab = read_vocabulary(images)
            store = Store(Path(tmp) / f"set-{seed}.h5")
            embed(images, store, model="mdclust-tiny", labels=images / "labels.csv")
            X = load_image_features(store).vectors
            for a in AUGMENTS:
                if a.replace(",", "+") in args.views:
                    embed(images, store, model="mdclust-tiny", views=8, augment=a)
            for aspect in args.aspects:
                k = len(vocab[aspect]["present"])
                candidates(store, aspect, from_file=interest_file(aspect), k=k, encode=False)
                cluster(store, aspect, method="kmeans")
                rows.setdefault((aspect, "k-means"), []).append(
                    evaluate(store, aspect, method="kmeans").nmi)
                truth = store.read_group("labels")
                y = dict(zip(truth["path"], truth[aspect]))
                for views in args.views:
                    train(store, aspect, method="pipcdr", config=PipcdrConfig(k=k, views=views))
                    cluster(store, aspect, method="pipcdr")
                    nmi = evaluate(store, aspect, method="pipcdr").nmi
                    rows.setdefault((aspect, f"pipcdr {views}"), []).append(nmi)
                    paths, F = read_trained(store, aspect, "pipcdr")
                    both = np.hstack([X, F])
                    t = [y[p] for p in paths]
                    res = np.mean([scores(t, kmeans(both, k, seed=s))["nmi"] for s in range(10)])
                    rows.setdefault((aspect, f"pipcdr {views} + input"), []).append(res)
                    print(f"set {seed} {aspect:6s} pipcdr {views:12s} NMI {nmi:.3f}, + input "
                          f"{res:.3f} (k-means {rows[(aspect, 'k-means')][-1]:.3f})", flush=True)
    print(f"\nNMI, mean over dev seeds {args.seeds}, {args.n} images each:")
    for (aspect, name), v in rows.items():
        print(f"  {aspect:6s} {name:20s} {np.mean(v):.3f}  ({', '.join(f'{x:.3f}' for x in v)})")


if __name__ == "__main__":
    main()
