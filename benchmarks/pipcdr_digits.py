"""PIPCDR against k-means on the same features: scikit-learn's load_digits (1,797 real
handwritten digits, 10 classes), NMI / ACC / ARI, mean of 3 seeds.

Two inputs, each clustered by k-means (n_init=10) and by k-means on PIPCDR's learned features:
  pixels    the 64 raw pixels, L2-normalised (k-means does better on these than on
            standardised pixels: NMI 0.739 against 0.681); feature-space views (one-pixel
            shifts and affine jitter as stored views measured 0.02-0.04 NMI worse);
  embedded  the digits written as PNG files (upscaled to 32 px), run through the product path
            (`mdclust embed --views 8 --augment crop,rotate` with the bundled mdclust-tiny
            CLIP, then `train --method pipcdr`, `cluster`, scored against the labels), once
            with the stored views and once with `--views none`.

    python benchmarks/pipcdr_digits.py [--seeds 0 1 2] [--epochs N] [--only pixels|embedded]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

VIEWS = 8


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True).clip(min=1e-12)).astype(np.float32)


def pixel_inputs():
    from sklearn.datasets import load_digits

    d = load_digits()
    return unit(d.data), d.target


def run_pixels(seeds, epochs):
    from sklearn.cluster import KMeans

    from mdclust.core.metrics import scores
    from mdclust.methods import pipcdr as pc

    X, y = pixel_inputs()
    rows = {"k-means": [], "pipcdr": []}
    for seed in seeds:
        rows["k-means"].append(scores(y, KMeans(10, n_init=10, random_state=seed)
                                      .fit_predict(X)))
        t0 = time.perf_counter()
        F = pc.fit(X, 10, seed=seed, **({"epochs": epochs} if epochs else {}))
        rows["pipcdr"].append({**scores(y, KMeans(10, n_init=10, random_state=seed)
                                        .fit_predict(F)),
                               "seconds": time.perf_counter() - t0})
    return rows


def write_pngs(folder: Path) -> Path:
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["path,digit"]
    for i, (img, label) in enumerate(zip(d.images, d.target)):
        px = (255 - img * 255 / 16).astype(np.uint8)  # dark ink on white, like paper
        name = f"{i:04d}.png"
        Image.fromarray(px).resize((32, 32), Image.BILINEAR).convert("RGB").save(folder / name)
        lines.append(f"{name},{label}")
    labels = folder.parent / "labels.csv"
    labels.write_text("\n".join(lines) + "\n")
    return labels


def run_embedded(seeds, epochs, workdir: Path):
    from mdclust.core.metrics import scores
    from mdclust.core.store import Store
    from mdclust.methods.pipcdr_config import PipcdrConfig
    from mdclust.stages.cluster import cluster, read_clustering
    from mdclust.stages.embed import embed
    from mdclust.stages.train import train

    labels = write_pngs(workdir / "digits")
    store = Store(workdir / "digits.h5")
    t0 = time.perf_counter()
    embed(workdir / "digits", store, model="mdclust-tiny", labels=labels, views=VIEWS,
          augment="crop,rotate")
    print(f"embedded 1797 digits with {VIEWS} views in {time.perf_counter() - t0:.0f} s",
          flush=True)
    truth = store.read_group("labels")
    digit = dict(zip(truth["path"], truth["digit"]))

    def score(method: str) -> dict:
        g = read_clustering(store, None, method)
        return scores([digit[p] for p in g["path"]], g["label"])

    rows = {"k-means": [], "pipcdr": [], "pipcdr, --views none": []}
    for seed in seeds:
        cluster(store, method="kmeans", k=10, seed=seed)
        rows["k-means"].append(score("kmeans"))
        for name, views in (("pipcdr", "auto"), ("pipcdr, --views none", "none")):
            t0 = time.perf_counter()
            cfg = PipcdrConfig(k=10, seed=seed, views=views,
                               **({"epochs": epochs} if epochs else {}))
            train(store, None, method="pipcdr", config=cfg)
            cluster(store, method="pipcdr", k=10, seed=seed)
            rows[name].append({**score("pipcdr"), "seconds": time.perf_counter() - t0})
    return rows


def table(name: str, rows: dict) -> None:
    mean = {m: {key: float(np.mean([r[key] for r in rs])) for key in rs[0]}
            for m, rs in rows.items()}
    print(f"\n{name} (mean of {len(rows['k-means'])} seeds)")
    print(f"  {'method':21s} {'NMI':>6s} {'ACC':>6s} {'ARI':>6s} {'NMI gain':>8s}")
    base = mean["k-means"]["nmi"]
    for m, s in mean.items():
        extra = f"  ({s['seconds']:.0f} s per run)" if "seconds" in s else ""
        print(f"  {m:21s} {s['nmi']:6.3f} {s['acc']:6.3f} {s['ari']:6.3f} "
              f"{s['nmi'] - base:+8.3f}{extra}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=None, help="[default: the method's]")
    ap.add_argument("--only", choices=["pixels", "embedded"])
    args = ap.parse_args()
    if args.only != "embedded":
        table("raw pixels", run_pixels(args.seeds, args.epochs))
    if args.only != "pixels":
        with tempfile.TemporaryDirectory() as tmp:
            table("embedded by the pipeline (mdclust-tiny, views crop+rotate)",
                  run_embedded(args.seeds, args.epochs, Path(tmp)))


if __name__ == "__main__":
    main()
