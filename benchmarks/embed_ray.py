"""Wall time of `mdclust embed --engine ray` against the local engine, same folder and machine.

Both runs embed the same generated folder into fresh stores, in this process, timed as a user
sees them: model loading included, and for Ray the start of a local Ray instance, its model
actors and its shutdown. The local run comes first (the baseline, measured in this run), then
Ray; the stores are checked to hold the same rows. A last Ray run on a folder of one batch
shows Ray's fixed cost (instance start, actors loading the model, shutdown). Figures go to
docs/scale.md.

    python benchmarks/embed_ray.py [--n 10000] [--size 32] [--model mdclust-tiny]
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


def make_folder(folder: Path, n: int, size: int) -> float:
    """n distinct small PNGs (random colour blocks), 100 per subfolder; returns seconds."""
    import numpy as np
    from PIL import Image

    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    for i in range(n):
        sub = folder / f"{i // 100:04d}"
        sub.mkdir(parents=True, exist_ok=True)
        blocks = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        img = Image.fromarray(blocks).resize((size, size), Image.NEAREST)
        img.save(sub / f"img{i:05d}.png")
    return time.perf_counter() - t0


def timed_embed(folder: Path, store: Path, **kw) -> tuple[float, object]:
    from mdclust.stages.embed import embed

    t0 = time.perf_counter()
    res = embed(folder, store, **kw)
    return time.perf_counter() - t0, res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--size", type=int, default=32, help="side of the generated PNGs")
    ap.add_argument("--model", default="mdclust-tiny")
    ap.add_argument("--pretrained", default=None, help="default: the model's own")
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()

    import numpy as np
    import ray
    import torch

    from mdclust.core.features import load_image_features
    from mdclust.core.store import Store

    common = dict(model=args.model, pretrained=args.pretrained, device="cpu",
                  batch_size=args.batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        t_make = make_folder(folder, args.n, args.size)
        t_local, local = timed_embed(folder, Path(tmp) / "local.h5", **common)
        t_ray, rayed = timed_embed(folder, Path(tmp) / "ray.h5", engine="ray", **common)
        a = load_image_features(Store(Path(tmp) / "local.h5"))
        b = load_image_features(Store(Path(tmp) / "ray.h5"))
        assert local.embedded == rayed.embedded == args.n, (local.embedded, rayed.embedded)
        assert a.paths == b.paths
        diff = float(np.abs(a.vectors.astype(np.float32) - b.vectors.astype(np.float32)).max())
        assert diff <= 1e-3, diff
        small = Path(tmp) / "small"
        make_folder(small, args.batch_size, args.size)
        t_fixed, _ = timed_embed(small, Path(tmp) / "small.h5", engine="ray", **common)

    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), ray {ray.__version__}; load average "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg())} after the runs")
    print(f"folder : {args.n} PNGs {args.size}x{args.size} (made in {t_make:.1f} s); "
          f"model {args.model}; batch {args.batch_size}")
    print(f"local  : {t_local:7.2f} s  {args.n / t_local:7.1f} img/s  (workers: default)")
    print(f"ray    : {t_ray:7.2f} s  {args.n / t_ray:7.1f} img/s  (local Ray instance, "
          f"start and shutdown included)")
    print(f"ratio  : {t_ray / t_local:7.2f}x ray/local  (target <= 1.5x); features max |diff| "
          f"{diff:.1e}")
    print(f"fixed  : {t_fixed:7.2f} s  Ray on {args.batch_size} images (one batch)")


if __name__ == "__main__":
    main()
