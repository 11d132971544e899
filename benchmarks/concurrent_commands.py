"""Two CPU-bound mdclust commands at once (issue #22): each one's time beside the other over its
time alone, for the thread policy before and after MDCLUST_THREADS (mdclust/core/threads.py).

Policies (each child gets a clean environment: no OMP_*, MKL_*, OPENBLAS_*, GOMP_*, KMP_*):
  old  MDCLUST_THREADS=off: the libraries' defaults (one thread per core, idle OpenMP threads
       spin), what every command did before;
  passive  OMP_WAIT_POLICY=PASSIVE: idle threads sleep at once (the default from issue #22 to
       the demo's slowdown in issue #23: Multi-DProxy ran 2.1 times slower alone);
  new  MDCLUST_THREADS unset: the default now (one thread per core, idle threads spin 3,000
       turns, GOMP_SPINCOUNT, then sleep);
  one  MDCLUST_THREADS=1: one thread per command.

Workload: `mdclust train --method pipcdr --k 10 --epochs 10` on 899 digits (scikit-learn's
load_digits, written as 32 px PNG files and embedded once by `mdclust embed --model mdclust-tiny
--views 8 --augment crop,rotate`, as in benchmarks/pipcdr_digits.py; issue #22 timed the same
command). Every run trains on its own fresh copy of that store (no checkpoint to resume). A pair
still running after --cap seconds is stopped and its ratio printed as "> x". The target: each
of two commands at once takes at most 2.5 times its time alone. CPU seconds per process are
printed too: they grow with spinning, and are less disturbed by other load than wall times.

Run it on a quiet machine (nothing else busy), from the repository root; about 5 minutes on 2
cores, at most 8 with the default --cap:

    .venv/bin/python benchmarks/concurrent_commands.py
    .venv/bin/python benchmarks/concurrent_commands.py --policies new one --epochs 20 --repeat 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
N_DIGITS = 899
POLICIES = {"old": {"MDCLUST_THREADS": "off"}, "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
            "new": {}, "one": {"MDCLUST_THREADS": "1"}}
TARGET = 2.5
# The variables that decide thread counts and waiting; the children get none but the policy's.
THREAD_VARS = ("MDCLUST_THREADS", "OMP_", "MKL_", "OPENBLAS_", "GOMP_", "KMP_", "GOTO_")


def child_env(policy: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(THREAD_VARS)}
    return {**env, **POLICIES[policy], "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])}


def mdclust(*args: str) -> list[str]:
    return [sys.executable, "-m", "mdclust", *args, "--quiet"]


def make_store(work: Path) -> Path:
    """The 899 digits as PNG files, embedded with 8 views: work/base/digits.h5."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    folder = work / "digits"
    folder.mkdir()
    lines = ["path,digit"]
    for i, (img, label) in enumerate(zip(d.images[:N_DIGITS], d.target[:N_DIGITS])):
        px = (255 - img * 255 / 16).astype(np.uint8)  # dark ink on white, like paper
        Image.fromarray(px).resize((32, 32), Image.BILINEAR).convert("RGB").save(
            folder / f"{i:04d}.png")
        lines.append(f"{i:04d}.png,{label}")
    (work / "labels.csv").write_text("\n".join(lines) + "\n")
    (work / "base").mkdir()
    store = work / "base" / "digits.h5"
    t0 = time.perf_counter()
    subprocess.run(mdclust("embed", str(folder), "--labels", str(work / "labels.csv"),
                           "--model", "mdclust-tiny", "--views", "8", "--augment", "crop,rotate",
                           "--store", str(store)), env=child_env("new"), check=True)
    print(f"embedded {N_DIGITS} digits with 8 views in {time.perf_counter() - t0:.0f} s",
          flush=True)
    return store


def run_together(n: int, policy: str, store: Path, epochs: int, cap: float) -> list[dict]:
    """n trainings started at once, each on its own copy of the store: wall and CPU seconds."""
    procs, copies = [], []
    for _ in range(n):
        copy = Path(tempfile.mkdtemp(dir=store.parents[1], prefix=f"{policy}-"))
        copies.append(copy)
        shutil.copytree(store.parent, copy, dirs_exist_ok=True)  # entry file + any .data folder
        procs.append(subprocess.Popen(
            mdclust("train", "--method", "pipcdr", "--k", "10", "--epochs", str(epochs),
                    "--store", str(copy / store.name)), env=child_env(policy)))
    t0 = time.perf_counter()
    done: dict[int, dict] = {}
    while len(done) < n:
        pid, status, usage = os.wait4(-1, os.WNOHANG)
        if pid:
            done[pid] = {"wall_s": time.perf_counter() - t0, "ok": status == 0,
                         "cpu_s": usage.ru_utime + usage.ru_stime}
        elif time.perf_counter() - t0 > cap:
            for p in procs:
                if p.pid not in done:
                    p.kill()
                    p.wait()
                    done[p.pid] = {"wall_s": cap, "ok": False, "capped": True, "cpu_s": None}
        else:
            time.sleep(0.05)
    for p in procs:
        p.returncode = 0 if p.returncode is None else p.returncode  # reaped by wait4 above
    for copy in copies:
        shutil.rmtree(copy, ignore_errors=True)
    out = [done[p.pid] for p in procs]
    failed = [r for r in out if not r["ok"] and not r.get("capped")]
    if failed:
        sys.exit(f"a training under policy {policy!r} failed; see its message above")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policies", nargs="+", choices=list(POLICIES), default=list(POLICIES))
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=1, help="alone + pair runs per policy")
    ap.add_argument("--cap", type=float, default=180.0,
                    help="seconds after which a pair is stopped [180]")
    ap.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = ap.parse_args()

    import torch

    print(f"{os.cpu_count()} CPUs, torch {torch.__version__}, load average "
          f"{os.getloadavg()[0]:.2f} at the start; train --method pipcdr --epochs "
          f"{args.epochs} on {N_DIGITS} digits", flush=True)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = make_store(Path(tmp))
        for policy in args.policies:
            alone, pairs = [], []
            for _ in range(args.repeat):
                alone += run_together(1, policy, store, args.epochs, args.cap)
                pairs.append(run_together(2, policy, store, args.epochs, args.cap))
                print(f"  {policy}: alone {alone[-1]['wall_s']:.1f} s, together "
                      f"{pairs[-1][0]['wall_s']:.1f} s and {pairs[-1][1]['wall_s']:.1f} s",
                      flush=True)
            t_alone = statistics.median(r["wall_s"] for r in alone)
            each = [statistics.median(p[i]["wall_s"] for p in pairs) for i in (0, 1)]
            results[policy] = {
                "env": POLICIES[policy], "alone_s": t_alone, "together_s": each,
                "ratios": [t / t_alone for t in each],
                "capped": any(r.get("capped") for p in pairs for r in p),
                "alone_cpu_s": statistics.median(r["cpu_s"] for r in alone),
                "together_cpu_s": [r["cpu_s"] for r in pairs[-1]]}
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end (above ~0.5 before the start "
          "means the machine was not quiet)\n")
    print(f"  {'policy':7s} {'alone':>8s} {'together (each)':>17s} {'ratio (each)':>14s} "
          f"{'CPU s alone / together':>24s}  <= {TARGET}x")
    for policy, r in results.items():
        more = "> " if r["capped"] else ""
        cpu = " ".join("-" if c is None else f"{c:.1f}" for c in r["together_cpu_s"])
        ok = "yes" if not r["capped"] and max(r["ratios"]) <= TARGET else "NO"
        print(f"  {policy:7s} {r['alone_s']:7.1f}s {r['together_s'][0]:8.1f}s "
              f"{r['together_s'][1]:6.1f}s {more}{r['ratios'][0]:6.2f} {more}{r['ratios'][1]:5.2f} "
              f"{r['alone_cpu_s']:10.1f} / {cpu:11s}  {ok}")
    if args.out:
        args.out.write_text(json.dumps({"epochs": args.epochs, "digits": N_DIGITS,
                                        "cpus": os.cpu_count(), "results": results}, indent=1))


if __name__ == "__main__":
    main()
