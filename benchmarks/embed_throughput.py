"""Images/s of `mdclust embed` against a naive loop, on the same model, folder and machine.

The naive loop is what a first script does: decode one image in the main process, run the model
on it alone, repeat. Both timings include loading the model; the ratio is what matters, since
both are measured in this run.

    python benchmarks/embed_throughput.py [--n 256] [--model ViT-B-32] [--size 320]
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


def make_folder(folder: Path, n: int, size: int) -> None:
    import numpy as np
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(0)
    for i in range(n):
        arr = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
        img = Image.fromarray(arr).resize((size, size), Image.BICUBIC).filter(ImageFilter.BLUR)
        img.save(folder / f"img{i:05d}.jpg", quality=90)


def naive(folder: Path, model: str, pretrained: str) -> tuple[float, int]:
    import torch

    from mdclust.core.encoders import ClipEncoder, model_spec
    from mdclust.core.images import load_rgb

    t0 = time.perf_counter()
    enc = ClipEncoder(model_spec(model, pretrained), device="cpu", precision="fp32")
    n = 0
    for p in sorted(folder.glob("*.jpg")):
        with torch.no_grad():
            feat = enc.model.encode_image(enc.preprocess(load_rgb(p)).unsqueeze(0))
            torch.nn.functional.normalize(feat, dim=-1)
        n += 1
    return time.perf_counter() - t0, n


def mdclust_embed(folder: Path, store: Path, model: str, pretrained: str, batch: int,
                  workers: int | None) -> tuple[float, int]:
    from mdclust.stages.embed import embed

    t0 = time.perf_counter()
    res = embed(folder, store, model=model, pretrained=pretrained, device="cpu",
                batch_size=batch, workers=workers)
    return time.perf_counter() - t0, res.embedded


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--size", type=int, default=320, help="side of the generated JPEGs")
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--pretrained", default="random")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args()

    import torch

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        make_folder(folder, args.n, args.size)
        t_naive, n1 = naive(folder, args.model, args.pretrained)
        t_md, n2 = mdclust_embed(folder, Path(tmp) / "s.h5", args.model, args.pretrained,
                                 args.batch_size, args.workers)
        t_re, _ = mdclust_embed(folder, Path(tmp) / "s.h5", args.model, args.pretrained,
                                args.batch_size, args.workers)
    assert n1 == n2 == args.n
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; model {args.model} ({args.pretrained}); "
          f"{args.n} JPEGs {args.size}px")
    print(f"naive loop      : {t_naive:7.2f} s  {n1 / t_naive:7.1f} img/s")
    workers = args.workers if args.workers is not None else "default"
    print(f"mdclust embed   : {t_md:7.2f} s  {n2 / t_md:7.1f} img/s  "
          f"(batch {args.batch_size}, workers {workers})")
    print(f"speed-up        : {t_naive / t_md:7.2f}x  (target >= 1.5x)")
    print(f"unchanged rerun : {t_re:7.2f} s")


if __name__ == "__main__":
    main()
