"""The command line the dev studies under benchmarks/explore share: run ``one_set`` on the dev
sets of both worlds (never a test set), print ``summary`` of the rows, keep them as JSON; or
only summarise rows kept before (``--summary``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import quality as q  # noqa: E402


def main(doc: str, one_set, summary, options: dict[str, dict] | None = None) -> None:
    """``one_set(world, seed, n, workdir, log, **extra) -> rows``; ``summary(rows) -> lines``.
    ``options``: a study's own flags ({"--name": add_argument's keywords}); their values reach
    ``one_set`` as keyword arguments."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    for flag, kw in (options or {}).items():
        ap.add_argument(flag, **kw)
    ap.add_argument("--workdir", type=Path, help="keep the generated sets and stores here")
    ap.add_argument("--worlds", nargs="+", choices=q.WORLD_NAMES, default=list(q.WORLD_NAMES))
    ap.add_argument("--seeds", type=int, nargs="+", default=list(q.DEV_SEEDS))
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--json", type=Path, help="write the rows here")
    ap.add_argument("--summary", type=Path, help="only summarise rows written before")
    args = ap.parse_args()
    if args.summary:
        print("\n".join(summary(json.loads(args.summary.read_text()))))
        return
    if set(args.seeds) - set(q.DEV_SEEDS):
        sys.exit(f"dev seeds only ({q.DEV_SEEDS}): the test sets are for reporting")
    if args.workdir is None:
        sys.exit("--workdir is needed to run")
    args.workdir.mkdir(parents=True, exist_ok=True)
    names = [flag.lstrip("-").replace("-", "_") for flag in options or {}]
    extra = {name: getattr(args, name) for name in names}
    rows = [r for w in args.worlds for s in args.seeds
            for r in one_set(w, s, args.n, args.workdir, lambda m: print(m, flush=True),
                             **extra)]
    print("\n".join(summary(rows)))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


def dev_set(world: str, seed: int, n: int, workdir: Path):
    """(vocabulary, store, stored features, their vectors as float64, labels) of a generated
    set; ``labels(aspect)`` gives each image's value in the features' row order."""
    import numpy as np

    from mdclust.core.features import load_image_features
    from mdclust.core.labels import read_labels_csv

    vocab, store = q.embedded_set(seed, n, workdir, world)
    f = load_image_features(store)
    truth = read_labels_csv(workdir / f"{world}-{seed}-{n}" / "labels.csv")
    return (vocab, store, f, np.asarray(f.vectors, dtype=np.float64),
            lambda aspect: [truth[aspect][p] for p in f.paths])


def aspects(world: str, seed: int, n: int, workdir: Path):
    """Every aspect of a dev set as the interest: (store, stored features, their vectors,
    aspect, its labels in row order, k = values present, mean k-means NMI over seeds 0-2)."""
    vocab, store, f, E, labels = dev_set(world, seed, n, workdir)
    for aspect in vocab:
        y = labels(aspect)
        k = len(vocab[aspect]["present"])
        yield store, f, E, aspect, y, k, kmeans_nmi(E, y, k), vocab[aspect]


def kmeans_nmi(X, y, k: int) -> float:
    """Mean NMI of k-means on ``X`` (as float32) over seeds 0-2."""
    import numpy as np
    from sklearn.metrics import normalized_mutual_info_score as nmi

    from mdclust.methods.baselines import kmeans

    X = np.asarray(X, dtype=np.float32)
    return float(np.mean([nmi(y, kmeans(X, k, seed=s)) for s in range(3)]))


def log_row(log, row: dict) -> None:
    log(json.dumps({a: round(b, 3) if isinstance(b, float) else b for a, b in row.items()}))


def by_world_source(rows: list[dict]) -> list[tuple[tuple[str, str], list[dict]]]:
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["world"], r["source"]), []).append(r)
    return sorted(groups.items())


def filtered(store, f, aspect: str, source: str, k: int, vocabulary: list[str], world: str,
             workdir: Path):
    """GradNorm's filter run on an interest's words from ``source`` (the quality benchmark's
    three, or "wordnet-all": the paper's pool): (the candidate words, None for the pool; the
    kept nouns' text features as float64)."""
    import numpy as np

    from mdclust.core import layout
    from mdclust.core.textcache import text_features
    from mdclust.stages.filter import filter_nouns

    words = None
    if source == "wordnet-all":
        filter_nouns(store, aspect, method="gradnorm", pool="wordnet-all", k=k)
    else:
        words = q.source_words(store, aspect, source, k, vocabulary, world, workdir)
        filter_nouns(store, aspect, method="gradnorm", k=k)
    kept = layout.read_filtered(store, aspect, "gradnorm")["noun"]
    return words, np.asarray(text_features(store, kept, model=f.key), dtype=np.float64)
