"""Dev study of `candidates --source wordnet` lists (docs/candidates.md, "Tried"): the shipped
rule (hyponyms to depth 3 of every noun sense) against deeper walks and against leaving out
the interest's rare senses (under 5 % of its SemCor-tagged uses), scored by zero-shot, GradNorm
and TAC (hubness median, as `cluster --hubness auto` does for WordNet lists) on every aspect
of both worlds. Not adopted: docs/candidates.md has the figures.

Dev sets only (benchmarks/quality.py's DEV_SEEDS); the test seeds are refused.

    python benchmarks/explore/wordnet_senses.py --workdir /tmp/hub --json /tmp/wn.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import devrun  # noqa: E402

# v0 is the shipped rule; v1 walks the whole subtree; v3 and v4 leave out rare senses.
VARIANTS = {"v0": dict(depth=3), "v1": dict(depth=12), "v3": dict(depth=12, share=0.05),
            "v4": dict(depth=3, share=0.05)}


def words_of(interest: str, n: int, depth: int = 3, share: float = 0.0) -> list[str]:
    """mdclust.stages.candidates.wordnet.interest_candidates with two knobs: the depth, and
    ``share``: senses with fewer than that share of the interest's tagged uses are left out."""
    from mdclust.stages.candidates.wordnet import clean, ranked_hyponyms, wordnet

    key = interest.strip().lower().replace(" ", "_")
    senses = wordnet().synsets(key, "n")
    counts = [sum(lem.count() for lem in s.lemmas() if lem.name().lower() == key)
              for s in senses]
    if sum(counts) and share:
        senses = [s for s, c in zip(senses, counts) if c >= share * sum(counts)]
    return ranked_hyponyms(senses, clean(key), depth)[:n]


def one_set(world: str, seed: int, n: int, workdir: Path, log) -> list[dict]:
    from sklearn.metrics import normalized_mutual_info_score as nmi

    from mdclust.core.textcache import text_features
    from mdclust.methods import gradnorm as gn
    from mdclust.methods.baselines import kmeans, zero_shot
    from mdclust.stages.candidates import default_n

    vocab, store, f, E, labels = devrun.dev_set(world, seed, n, workdir)
    rows = []
    for aspect in vocab:
        y = labels(aspect)
        present = vocab[aspect]["present"]
        k = len(present)
        r = {"world": world, "seed": seed, "aspect": aspect, "k": k, "kmeans": float(np.mean(
            [nmi(y, kmeans(E.astype(np.float32), k, seed=s)) for s in range(3)]))}
        for v, kw in VARIANTS.items():
            words = words_of(aspect, default_n(k), **kw)
            if len(words) < 2:  # "slant": one hyponym in all
                continue
            R = np.asarray(text_features(store, words, model=f.key), dtype=np.float64)
            S = E @ R.T
            shift = np.median(S, 0)
            r[v + "_zs"] = nmi(y, zero_shot(S - shift, np.eye(len(R)), k)[0])
            for score in ("gradnorm", "msp"):
                keep = gn.filter_nouns(E, R, gn.LaICConfig(k=k, score=score))[0]
                V, _ = gn.image_text_rows(E, R[keep], shift=shift[keep])
                X = np.hstack([E, V.astype(np.float64)]).astype(np.float32)
                r[v + "_" + score] = nmi(y, kmeans(X, k, seed=0))
            r[v + "_words"] = len(words)
            r[v + "_values_listed"] = len(set(words) & set(present))
        rows.append(r)
        log(json.dumps({a: round(b, 3) if isinstance(b, float) else b for a, b in r.items()}))
    return rows


def summary(rows: list[dict]) -> list[str]:
    out = []
    for world in sorted({r["world"] for r in rows}):
        rs = [r for r in rows if r["world"] == world and "v0_zs" in r]
        for m in ("zs", "gradnorm", "msp"):
            out.append(f"{world} {m} ({len(rs)} cases): " + ", ".join(
                f"{v} {np.mean([r[f'{v}_{m}'] for r in rs]):.3f}" for v in VARIANTS))
    return out


def main() -> None:
    devrun.main(__doc__, one_set, summary)


if __name__ == "__main__":
    main()
