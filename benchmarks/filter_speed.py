"""Speed of the GradNorm filter on the whole WordNet noun pool, and of k-means at scale.

1. Filter: a store with N synthetic image features (512-d, ViT-B-32 sized) and text features of
   all 67,186 WordNet nouns already cached; times `filter_nouns` for gradnorm, msp and cosine
   (pseudo-label k-means + classifier + scoring + selection + store commit), and the baseline of
   the same run: reading the cached text features alone.
2. k-means (scikit-learn, k-means++, n_init=10) on 10k and 100k synthetic 512-d features, and
   spherical k-means on 10k.

3. `--sampled`: the filter on 100k images scored on every image (`--sample all`, the paper)
   and on its default sample (60,000 images, at most 200 pseudo-classes), the kept nouns
   compared (Jaccard), then the sampled filter at 1M; times as ratios to the full 100k run.

    python benchmarks/filter_speed.py [--n-images 5000] [--skip-100k]
    python benchmarks/filter_speed.py --sampled [--sizes 100000 1000000]
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


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def synthetic(n, d=512, k=10, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d))
    return unit(centers[rng.integers(0, k, n)] + 2.0 * rng.normal(size=(n, d)))


def build_store(path: Path, n: int, d: int = 512):
    from mdclust.core.store import Store
    from mdclust.core.textcache import _group
    from mdclust.stages.candidates.wordnet import all_nouns

    st = Store(path)
    X = synthetic(n, d)
    shas = [f"{i:064x}" for i in range(n)]
    words = all_nouns()
    key = "bench@random"
    with st.transaction() as txn:
        txn.put_group("images", {"path": [f"{i}.png" for i in range(n)], "sha256": shas,
                                 "size": np.zeros(n, np.int64), "mtime": np.zeros(n)},
                      {"root": "/bench"})
        txn.put_group(f"features/{key}", {"sha256": shas, "vectors": X.astype(np.float16)},
                      {"model": "bench", "pretrained": "random", "weights_sha256": "", "dim": d})
        txn.put_group(_group(key, "A photo of a {}."),
                      {"text": words, "vectors": synthetic(len(words), d, seed=1).astype(
                          np.float16)}, {"template": "A photo of a {}."})
    return st, words


def sampled_runs(sizes: list[int], k: int) -> None:
    """The paper's filter against the sampled one (module docstring, part 3)."""
    import resource

    from mdclust.methods import gradnorm as gn
    from mdclust.stages.filter import filter_nouns

    base = None
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            st, words = build_store(Path(tmp) / "b.h5", n)
            runs = [("all", None), ("sampled", gn.SAMPLE)] if n == sizes[0] else \
                [("sampled", gn.SAMPLE)]
            kept = {}
            for name, sample in runs:
                t0 = time.perf_counter()
                res = filter_nouns(st, "bench", method="gradnorm", pool="wordnet-all", k=k,
                                   sample=sample)
                dt = time.perf_counter() - t0
                base = base or dt
                kept[name] = set(res.selected)
                print(f"  n={n:>9,} {name:8s} C={res.classes:5d} scored on "
                      f"{res.sampled or n:>9,} images: {dt:7.1f} s ({dt / base:5.2f}x the full "
                      f"{sizes[0]:,} run), kept {len(res.selected)}", flush=True)
            if len(kept) == 2:
                a, b = kept["all"], kept["sampled"]
                print(f"  n={n:,} Jaccard(all, sampled) = {len(a & b) / len(a | b):.3f}")
    print(f"  peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20:.2f} GB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-images", type=int, default=5000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--skip-100k", action="store_true")
    ap.add_argument("--sampled", action="store_true", help="part 3 only")
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    args = ap.parse_args()
    if args.sampled:
        return sampled_runs(args.sizes, args.k)

    from mdclust.core.textcache import text_features
    from mdclust.methods.baselines import kmeans, spherical_kmeans
    from mdclust.stages.filter import filter_nouns

    with tempfile.TemporaryDirectory() as tmp:
        st, words = build_store(Path(tmp) / "b.h5", args.n_images)
        t0 = time.perf_counter()
        text_features(st, words)
        t_read = time.perf_counter() - t0
        print(f"filter on {len(words):,} cached nouns, {args.n_images:,} images, k={args.k}:")
        print(f"  reading the cached text features (baseline): {t_read:6.2f} s")
        for method in ("gradnorm", "msp", "cosine"):
            t0 = time.perf_counter()
            res = filter_nouns(st, "bench", method=method, pool="wordnet-all", k=args.k)
            dt = time.perf_counter() - t0
            print(f"  {method:8s}: {dt:6.2f} s ({dt / t_read:5.1f}x the read), "
                  f"C={res.classes}, kept {len(res.selected)}")
    sizes = [10_000] + ([] if args.skip_100k else [100_000])
    for n in sizes:
        X = synthetic(n)
        t0 = time.perf_counter()
        kmeans(X, args.k, seed=0)
        print(f"k-means n={n:,} d=512 k={args.k} n_init=10: {time.perf_counter() - t0:6.2f} s")
    X = synthetic(10_000)
    t0 = time.perf_counter()
    spherical_kmeans(X, args.k, seed=0)
    print(f"spherical k-means n=10,000 d=512 k={args.k} n_init=10: "
          f"{time.perf_counter() - t0:6.2f} s")


if __name__ == "__main__":
    main()
