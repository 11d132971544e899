"""Seconds per Multi-DProxy epoch on 1k and 10k images, CPU (and CUDA when present).

Synthetic unit features (d = 512, ViT-B-32 sized; d = 64 for mdclust-tiny with --dim 64) and
2^5 * M candidates; batch 256, L = 1; timing over a few epochs after one warm-up epoch. The
baseline printed beside it is one k-means (n_init=10) on the same features, the cost of the
plain image-feature clustering that Multi-DProxy is compared with.

    python benchmarks/multidproxy_speed.py [--sizes 1000 10000] [--dim 512] [--epochs 3]
    python benchmarks/multidproxy_speed.py --feature-pass 100000 1000000

``--feature-pass`` times the pass that computes the stored fused features F for N synthetic
float16 features (each size in its own process, so the peak RSS is that pass's): every image
attends over a seeded reference set of 4,096 images. The baseline, measured in the same run, is
the 0.1 pass in which every image attended over all N images, at sizes where it still fits
(--full-sizes), with its O(N^2) extrapolation. The output goes where `mdclust train` puts it, a
nameless file written a chunk at a time (core/rowfile.py); ``--in-memory-too`` also times each
size with the output held in memory (what train did before), for the memory ratio.
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

    from mdclust.methods import multidproxy_net as net

    rng = np.random.default_rng(0)
    v = torch.from_numpy(unit(rng.normal(size=(n, d)))).to(device)
    C = torch.from_numpy(unit(rng.normal(size=(32 * k, d)))).to(device)
    t = torch.from_numpy(unit(rng.normal(size=(1, d)))[0]).to(device)
    model = net.MultiDProxy(n, d, unit(rng.normal(size=(1, d)))[0]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    times = []
    for e in range(epochs + 1):
        t0 = time.perf_counter()
        perm = torch.randperm(n, device=device)
        for i in range(0, n, 256):
            idx = perm[i:i + 256]
            w = model.proxies(idx, C)
            f, _ = model(v[idx], t, w)
            parts = net.losses(f, v[idx], w, C, model.base_proxies[idx])
            loss = parts["align"] + 0.3 * parts["u"] + 0.1 * parts["c"]
            opt.zero_grad()
            loss.backward()
            opt.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if e:
            times.append(time.perf_counter() - t0)
    return float(np.median(times))


def feature_pass(n: int, d: int, k: int, reference: int, to_file: bool = True) -> dict:
    """Seconds and peak RSS of the fused-feature pass on n synthetic float16 features."""
    import resource

    import torch

    from mdclust.methods import multidproxy as mdp
    from mdclust.methods import multidproxy_net as net

    rng = np.random.default_rng(0)
    centres = unit(rng.normal(size=(k, d)))
    v = np.empty((n, d), dtype=np.float16)  # built in blocks: no float64 copy of n x d
    for i in range(0, n, 20_000):
        j = min(n, i + 20_000)
        x = centres[rng.integers(0, k, j - i)] + 0.3 * rng.normal(size=(j - i, d))
        v[i:j] = unit(x)
    del x
    torch.manual_seed(0)
    model = net.MultiDProxy(n, d, unit(rng.normal(size=(1, d)))[0])
    C = torch.from_numpy(unit(rng.normal(size=(32 * k, d))))
    t = torch.from_numpy(unit(rng.normal(size=(1, d)))[0])
    ref = mdp.reference_index(n, reference, 0)
    from mdclust.core.rowfile import RowFile

    t0 = time.perf_counter()
    out = net.fused_features(model, v, t, C, ref,
                             out=RowFile((n, d), np.float32) if to_file else None)
    seconds = time.perf_counter() - t0
    assert out.shape == (n, d) and np.isfinite(out[n - 1:n]).all()
    return {"n": n, "reference": len(ref), "seconds": round(seconds, 2), "to_file": to_file,
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _in_subprocess(n: int, d: int, k: int, reference: int, to_file: bool = True) -> dict:
    import json
    import subprocess

    code = (f"import sys, json; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            f"import multidproxy_speed as b; "
            f"print(json.dumps(b.feature_pass({n}, {d}, {k}, {reference}, {to_file})))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--k", type=int, default=6)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--feature-pass", type=int, nargs="+", metavar="N",
                    help="time the fused-feature pass at these sizes instead")
    ap.add_argument("--full-sizes", type=int, nargs="+", default=[5000, 10000],
                    help="sizes for the all-N attention baseline of --feature-pass")
    ap.add_argument("--reference", type=int, default=4096)
    ap.add_argument("--in-memory-too", action="store_true",
                    help="also time each --feature-pass size with the output held in memory")
    args = ap.parse_args()
    if args.feature_pass:
        import torch

        print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
              f"d = {args.dim}, k = {args.k}, L = 1")
        base = [_in_subprocess(n, args.dim, args.k, n) for n in args.full_sizes]
        for b in base:
            print(f"baseline, all-N keys: n={b['n']:>9,}  {b['seconds']:8.2f} s  "
                  f"peak RSS {b['peak_rss_gb']:.2f} GB")
        last = base[-1]
        for n in args.feature_pass:
            r = _in_subprocess(n, args.dim, args.k, args.reference)
            full = last["seconds"] * (n / last["n"]) ** 2
            print(f"reference {r['reference']:,} keys: n={n:>9,}  {r['seconds']:8.2f} s  "
                  f"peak RSS {r['peak_rss_gb']:.2f} GB  (all-N keys, O(N^2) from n="
                  f"{last['n']:,}: ~{_duration(full)}; ratio {full / r['seconds']:.0f}x)")
            if args.in_memory_too:
                m = _in_subprocess(n, args.dim, args.k, args.reference, to_file=False)
                print(f"  output held in memory: n={n:>9,}  {m['seconds']:8.2f} s  peak RSS "
                      f"{m['peak_rss_gb']:.2f} GB  (file / memory: time "
                      f"{r['seconds'] / m['seconds']:.2f}x, RSS "
                      f"{r['peak_rss_gb'] / m['peak_rss_gb']:.2f}x)")
        return

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
