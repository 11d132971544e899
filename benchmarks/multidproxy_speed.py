"""Seconds per Multi-DProxy epoch on 1k and 10k images, CPU (and CUDA when present).

Synthetic unit features (d = 512, ViT-B-32 sized; d = 64 for mdclust-tiny with --dim 64) and
2^5 * M candidates; batch 256, L = 1; timing over a few epochs after one warm-up epoch. The
baseline printed beside it is one k-means (n_init=10) on the same features, the cost of the
plain image-feature clustering that Multi-DProxy is compared with.

    python benchmarks/multidproxy_speed.py [--sizes 1000 10000] [--dim 512] [--epochs 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def seconds_per_epoch(n: int, d: int, k: int, device: str, epochs: int) -> float:
    import torch

    from mdclust.methods import multidproxy as mdp

    rng = np.random.default_rng(0)
    v = torch.from_numpy(unit(rng.normal(size=(n, d)))).to(device)
    C = torch.from_numpy(unit(rng.normal(size=(32 * k, d)))).to(device)
    t = torch.from_numpy(unit(rng.normal(size=(1, d)))[0]).to(device)
    model = mdp.MultiDProxy(n, d, unit(rng.normal(size=(1, d)))[0]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    times = []
    for e in range(epochs + 1):
        t0 = time.perf_counter()
        perm = torch.randperm(n, device=device)
        for i in range(0, n, 256):
            idx = perm[i:i + 256]
            w = model.proxies(idx, C)
            f, _ = model(v[idx], t, w)
            parts = mdp.losses(f, v[idx], w, C, model.base_proxies[idx])
            loss = parts["align"] + 0.3 * parts["u"] + 0.1 * parts["c"]
            opt.zero_grad()
            loss.backward()
            opt.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if e:
            times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--k", type=int, default=6)
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()

    import torch

    from mdclust.methods.baselines import kmeans

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, d = {args.dim}, "
          f"{32 * args.k} candidates, batch 256, L = 1")
    for n in args.sizes:
        X = unit(np.random.default_rng(1).normal(size=(n, args.dim)))
        t0 = time.perf_counter()
        kmeans(X, args.k, seed=0)
        t_km = time.perf_counter() - t0
        for dev in devices:
            s = seconds_per_epoch(n, args.dim, args.k, dev, args.epochs)
            print(f"n={n:>6,} {dev:4s}: {s:7.3f} s/epoch -> E=1000: {s * 1000 / 60:6.1f} min "
                  f"(one k-means baseline: {t_km:.2f} s; epoch/k-means {s / t_km:.1f}x)")


if __name__ == "__main__":
    main()
