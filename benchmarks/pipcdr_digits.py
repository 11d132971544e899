"""PIPCDR against k-means on the same features: scikit-learn's load_digits (1,797 real
handwritten digits, 10 classes), NMI / ACC / ARI, mean of 3 seeds.

Two inputs, each clustered by k-means (n_init=10) and by k-means on PIPCDR's learned features:
  pixels    the 64 raw pixels, standardised and L2-normalised; views are 8 random one-pixel
            shifts of each 8x8 image (the pixel-space counterpart of crops);
  embedded  the digits written as PNG files (upscaled to 32 px), run through the product path
            (`mdclust embed --views 8 --augment crop,rotate` with the bundled mdclust-tiny
            CLIP, then `train --method pipcdr`, `cluster`, scored against the labels).

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


def shifted_views(images: np.ndarray, views: int, seed: int = 0) -> np.ndarray:
    """(n, views, 64): each 8x8 image moved by up to one pixel in x and y (zero fill)."""
    rng = np.random.default_rng(seed)
    n = len(images)
    out = np.zeros((n, views, 8, 8), dtype=np.float64)
    padded = np.pad(images.reshape(n, 8, 8), ((0, 0), (1, 1), (1, 1)))
    for j in range(views):
        dy, dx = rng.integers(0, 3, size=(2, n))
        for i in range(n):
            out[i, j] = padded[i, dy[i]:dy[i] + 8, dx[i]:dx[i] + 8]
    return out.reshape(n, views, 64)


def pixel_inputs():
    from sklearn.datasets import load_digits
    from sklearn.preprocessing import StandardScaler

    d = load_digits()
    scaler = StandardScaler().fit(d.data)
    X = unit(scaler.transform(d.data))
    V = shifted_views(d.data, VIEWS)
    V = unit(scaler.transform(V.reshape(-1, 64)).reshape(V.shape))
    return X, np.concatenate([X[:, None], V], axis=1), d.target


def run_pixels(seeds, epochs):
    from sklearn.cluster import KMeans

    from mdclust.methods import pipcdr as pc
    from mdclust.metrics import scores

    X, views, y = pixel_inputs()
    rows = {"k-means": [], "pipcdr": []}
    for seed in seeds:
        rows["k-means"].append(scores(y, KMeans(10, n_init=10, random_state=seed)
                                      .fit_predict(X)))
        t0 = time.perf_counter()
        F = pc.fit(X, 10, views, seed=seed, **({"epochs": epochs} if epochs else {}))
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
    from mdclust.cluster import cluster, read_clustering
    from mdclust.embed import embed
    from mdclust.metrics import scores
    from mdclust.store import Store
    from mdclust.train import train
    from mdclust.train_pipcdr import PipcdrConfig

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

    rows = {"k-means": [], "pipcdr": []}
    for seed in seeds:
        cluster(store, method="kmeans", k=10, seed=seed)
        rows["k-means"].append(score("kmeans"))
        t0 = time.perf_counter()
        cfg = PipcdrConfig(k=10, seed=seed, **({"epochs": epochs} if epochs else {}))
        train(store, None, method="pipcdr", config=cfg)
        cluster(store, method="pipcdr", k=10, seed=seed)
        rows["pipcdr"].append({**score("pipcdr"), "seconds": time.perf_counter() - t0})
    return rows


def table(name: str, rows: dict) -> None:
    mean = {m: {key: float(np.mean([r[key] for r in rs])) for key in rs[0]}
            for m, rs in rows.items()}
    print(f"\n{name} (mean of {len(rows['k-means'])} seeds)")
    print(f"  {'method':8s} {'NMI':>6s} {'ACC':>6s} {'ARI':>6s}")
    for m, s in mean.items():
        extra = f"  ({s['seconds']:.0f} s per run)" if "seconds" in s else ""
        print(f"  {m:8s} {s['nmi']:6.3f} {s['acc']:6.3f} {s['ari']:6.3f}{extra}")
    ours, base = mean["pipcdr"]["nmi"], mean["k-means"]["nmi"]
    print(f"  pipcdr - k-means NMI: {ours - base:+.3f}  (ratio {ours / base:.2f}x)")


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
