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

4. `--structured`: the same comparison on 100k rows that have something to find: the real
   mdclust-tiny features of 3,000 generated images of a world (`--worlds`, set `--seed`),
   resampled with noise, and the candidate lists of the quality benchmark (`--sources`:
   vocabulary, wordnet, llm, and wordnet-all, every WordNet noun) for each interest
   (`--aspects`); also the paper's filter with another seed (how far two of its own runs agree),
   and GradNorm's NMI against the interest's labels after each filter (`--json`: the rows).

    python benchmarks/filter_speed.py [--n-images 5000] [--skip-100k]
    python benchmarks/filter_speed.py --sampled [--sizes 100000 1000000]
    python benchmarks/filter_speed.py --structured [--worlds shapes glyphs] [--seed 101] \
        [--sources vocabulary wordnet llm wordnet-all] [--aspects all] [--json FILE]
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


def structured_store(path: Path, n: int, source: Path, noise: float = 0.2):
    """A store of ``n`` rows whose features are the real mdclust-tiny features of a generated
    set (``source``: a store `embed` made, its cached text features carried over) resampled
    with noise (cosine ~0.98 to their image), so that the nouns have something to describe;
    returns (store, {aspect: label of each row})."""
    from mdclust.core import layout
    from mdclust.core.features import load_image_features
    from mdclust.core.store import Store
    from mdclust.core.textcache import _group

    src = Store(source)
    feats = load_image_features(src)
    truth = src.read_group(layout.LABELS)
    row_of = {p: i for i, p in enumerate(truth["path"])}
    rng = np.random.default_rng(0)
    pick = rng.integers(0, len(feats.paths), n)
    d = feats.vectors.shape[1]
    X = unit(feats.vectors[pick] + noise / np.sqrt(d) * rng.normal(size=(n, d)))
    shas = [f"{i:064x}" for i in range(n)]
    text = src.read_group(_group(feats.key, "A photo of a {}."))
    st = Store(path)
    with st.transaction() as txn:
        txn.put_group("images", {"path": [f"{i}.png" for i in range(n)], "sha256": shas,
                                 "size": np.zeros(n, np.int64), "mtime": np.zeros(n)},
                      {"root": "/bench"})
        txn.put_group(layout.features(feats.key), {"sha256": shas,
                                                   "vectors": X.astype(np.float16)},
                      src.attrs(layout.features(feats.key)))
        if text is not None:
            txn.put_group(_group(feats.key, "A photo of a {}."), text.data, text.attrs)
    rows = np.array([row_of[feats.paths[i]] for i in pick])
    labels = {a: np.asarray(v)[rows] for a, v in truth.data.items() if a != "path"}
    return st, labels


def structured_runs(n: int, k: int | None, worlds: list[str], seed: int, sources: list[str],
                    aspects: list[str] | None, json_out: Path | None) -> list[dict]:
    """Module docstring, part 4: the sampled filter against the paper's on real features, per
    world, aspect and candidate source of the quality benchmark."""
    import json

    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="mdclust-structured-") as tmp:
        for world in worlds:
            for row in structured_world(Path(tmp), world, n, k, seed, sources, aspects):
                rows.append(row)
                if json_out:
                    json_out.write_text(json.dumps(rows, indent=1))
    return rows


def structured_world(work: Path, world: str, n: int, k: int | None, seed: int,
                     sources: list[str], aspects: list[str] | None):
    """The rows of part 4 for one world (one per aspect and source), as they are measured."""
    from quality import embedded_set, usable_words  # benchmarks/quality.py, beside this
    from sklearn.metrics import normalized_mutual_info_score as nmi

    from mdclust.core.textcache import text_features
    from mdclust.methods import gradnorm as gn
    from mdclust.stages.candidates.wordnet import all_nouns
    from mdclust.stages.cluster import cluster
    from mdclust.stages.filter import filter_nouns

    # the paper's filter twice (how far two of its own runs agree) and the sampled one with the
    # first run's seed
    runs = (("paper", None, 0), ("paper, seed 1", None, 1), ("sampled", gn.SAMPLE, 0))
    vocab, src = embedded_set(seed, 3000, work, world)
    if "wordnet-all" in sources:  # encoded once here, carried over to the 100k store
        text_features(src, all_nouns())
    st, truth = structured_store(work / f"{world}-{n}.h5", n, src.path)
    for aspect in [a for a in aspects or vocab if a in vocab]:
        kk = k or len(vocab[aspect]["present"])
        for source in sources:
            pool = "wordnet-all" if source == "wordnet-all" else "candidates"
            if pool == "candidates" and usable_words(
                    st, aspect, source, kk, vocab[aspect]["vocabulary"], world, work, print,
                    f"{world} {aspect}") is None:
                continue
            kept, score = {}, {}
            for name, sample, s in runs:
                t0 = time.perf_counter()
                res = filter_nouns(st, aspect, method="gradnorm", pool=pool, k=kk, seed=s,
                                   sample=sample)
                dt = time.perf_counter() - t0
                kept[name] = set(res.selected)
                out = cluster(st, aspect, method="gradnorm", k=kk)
                score[name] = float(nmi(truth[aspect], out.labels))
                print(f"  {world} {aspect:<10} {source:<11} {name:<13} C={res.classes:4d} "
                      f"on {res.sampled or n:>7,}: {dt:5.1f} s, kept {len(res.selected):4d}, "
                      f"NMI {score[name]:.3f}", flush=True)

            def jac(a, b):
                return len(kept[a] & kept[b]) / max(1, len(kept[a] | kept[b]))

            row = {"world": world, "seed": seed, "aspect": aspect, "source": source, "k": kk,
                   "n": n, "kept": {r: len(v) for r, v in kept.items()},
                   "jaccard_paper_sampled": jac("paper", "sampled"),
                   "jaccard_paper_seeds": jac("paper", "paper, seed 1"), "nmi": score}
            print(f"  {world} {aspect:<10} {source:<11} Jaccard(paper, sampled) "
                  f"{row['jaccard_paper_sampled']:.3f}, (paper seed 0, seed 1) "
                  f"{row['jaccard_paper_seeds']:.3f}", flush=True)
            yield row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-images", type=int, default=5000)
    ap.add_argument("--k", type=int, help="clusters K [10; part 4: the values present]")
    ap.add_argument("--skip-100k", action="store_true")
    ap.add_argument("--sampled", action="store_true", help="part 3 only")
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--structured", action="store_true", help="part 4 only")
    ap.add_argument("--worlds", nargs="+", default=["shapes"], help="part 4: worlds")
    ap.add_argument("--seed", type=int, default=1,
                    help="part 4: the generated set's seed (quality benchmark: dev 1, 2; "
                         "test 101-103)")
    ap.add_argument("--sources", nargs="+", default=["wordnet-all"],
                    help="part 4: vocabulary, wordnet, llm, wordnet-all")
    ap.add_argument("--aspects", nargs="+", default=["color"], help="part 4: aspects, or all")
    ap.add_argument("--json", type=Path, help="part 4: write its rows here")
    args = ap.parse_args()
    if args.sampled:
        return sampled_runs(args.sizes, args.k or 10)
    if args.structured:
        return structured_runs(args.sizes[0], args.k, args.worlds,
                               args.seed, args.sources,
                               None if args.aspects == ["all"] else args.aspects, args.json)

    args.k = args.k or 10
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
