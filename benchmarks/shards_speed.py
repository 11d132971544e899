"""`mdclust embed` of tar shards against the same images as files (issue #26: shards at ≥ 90 %
of the files' speed), both measured in this run, each into a fresh store, in child processes.

    python benchmarks/shards_speed.py [--n 10000] [--shards 10] [--work /tmp/mdclust-shards]

Images: `mdclust datasets shapes` (64 px PNG), packed img2dataset-style (KEY.png, KEY.txt,
KEY.json) into --shards uncompressed tar files. The first embed of each kind is preceded by
one small embed that warms the page cache and the model load, so both read from memory.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).with_name("mdclust")


def pack(files: list[Path], folder: Path, shards: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    per = -(-len(files) // shards)
    for s in range(shards):
        with tarfile.open(folder / f"{s:05d}.tar", "w") as tar:
            for j, f in enumerate(files[s * per:(s + 1) * per]):
                key = f"{s:05d}{j:05d}"
                for name, data in ((f"{key}.png", f.read_bytes()),
                                   (f"{key}.txt", f.stem.encode()),
                                   (f"{key}.json", json.dumps({"key": key}).encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))


def embed(folder: Path, store: Path) -> dict:
    t0 = time.perf_counter()
    done = subprocess.run([str(BIN), "embed", str(folder), "--model", "mdclust-tiny",
                           "--store", str(store), "--json"], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=True)
    return {"seconds": round(time.perf_counter() - t0, 2), **json.loads(done.stdout)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--shards", type=int, default=10)
    ap.add_argument("--work", type=Path, default=Path("/tmp/mdclust-shards"))
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from mdclust.datasets import generate_shapes

    files_dir, shards_dir = args.work / "files", args.work / "shards"
    if not (files_dir / "labels.csv").is_file():
        shutil.rmtree(args.work, ignore_errors=True)
        generate_shapes(files_dir, n=args.n, seed=0)
    files = sorted(files_dir.glob("*.png"))
    if not shards_dir.is_dir():
        pack(files, shards_dir, args.shards)
    for p in args.work.glob("*.h5*"):
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    warm = args.work / "warm"
    shutil.rmtree(warm, ignore_errors=True)
    warm.mkdir()
    for f in files[:64]:
        shutil.copy(f, warm / f.name)
    embed(warm, args.work / "warm.h5")  # model load and page cache, for both
    for f in files:
        f.read_bytes()
    for s in shards_dir.glob("*.tar"):
        s.read_bytes()
    as_files = embed(files_dir, args.work / "files.h5")
    as_shards = embed(shards_dir, args.work / "shards.h5")
    ratio = as_files["seconds"] / as_shards["seconds"]
    out = {"date": date.today().isoformat(), "machine": f"{os.cpu_count()} CPUs, "
           f"{platform.machine()}", "n": args.n, "shards": args.shards,
           "files": {k: as_files[k] for k in ("seconds", "images", "embedded",
                                              "images_per_second")},
           "shards_run": {k: as_shards[k] for k in ("seconds", "images", "embedded",
                                                     "images_per_second")},
           "shard_speed_vs_files": round(ratio, 3), "target_met": ratio >= 0.9}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
