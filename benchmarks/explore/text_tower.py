"""Dev study for mdclust-tiny's text tower: how well the distillation targets, and students
trained on them, place words of a kind with that kind (docs/models.md, "v3.1: a candidate
trained and measured, not shipped").

Dev criterion (what choices are made on): WordNet hyponyms of six kinds the language test does
not use (fruit, placental mammal, vehicle, musical instrument, tree, fabric), 60 of each,
against six common words of each kind as values; the 92 values of both worlds are in the value
list too, as the distractors the test has. The test kinds (colour, shape, font) are printed for
the record only.

    python benchmarks/explore/text_tower.py targets              # targets only (numpy)
    python benchmarks/explore/text_tower.py student --steps 1500 --drop 4 --layers 4
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))

import captions  # noqa: E402
import language  # noqa: E402
import train_tiny_clip as ttc  # noqa: E402

DEV_KINDS = {
    "fruit": ("edible_fruit.n.01", ["apple", "banana", "grape", "cherry", "lemon", "pear"]),
    "mammal": ("placental.n.01", ["dog", "cat", "horse", "cow", "lion", "mouse"]),
    "vehicle": ("vehicle.n.01", ["car", "truck", "bus", "bicycle", "train", "boat"]),
    "instrument": ("musical_instrument.n.01",
                   ["piano", "guitar", "violin", "drum", "flute", "trumpet"]),
    "tree": ("tree.n.01", ["oak", "pine", "maple", "birch", "palm", "willow"]),
    "fabric": ("fabric.n.01", ["cotton", "silk", "wool", "linen", "denim", "velvet"]),
}


def dev_words(n: int = 60, seed: int = 0) -> dict[str, list[str]]:
    banned = captions.caption_words() | {v for _, vs in DEV_KINDS.values() for v in vs}
    taken: set[str] = set()
    out = {}
    for kind, (root, _) in DEV_KINDS.items():
        found = {name for name in language.hyponym_names(root, instances=False, with_root=False)
                 if re.fullmatch(r"[a-z][a-z \-]*", name) and not set(name.split()) & banned}
        found -= taken
        words = sorted(found)
        random.Random(seed).shuffle(words)
        out[kind] = sorted(words[:n])
        taken |= set(out[kind])
    return out


def dev_accuracy(encode, words, template="a photo of a {}.") -> dict[str, float]:
    values = [(k, v) for k, (_, vs) in DEV_KINDS.items() for v in vs]
    values += [(f"world:{a}", v) for _, a, v in language.all_values()]
    vv = encode([template.format(v) for _, v in values])
    kinds = np.array([k for k, _ in values])
    out = {}
    for kind, ws in words.items():
        t = encode([template.format(w) for w in ws])
        out[kind] = round(float((kinds[(t @ vv.T).argmax(1)] == kind).mean()), 3)
    out["mean"] = round(float(np.mean(list(out.values()))), 3)
    return out


def test_accuracy(encode) -> dict[str, float]:
    r = language.kind_accuracy(encode, language.kind_words(captions.caption_words()))
    return {k: v["right"] for k, v in r.items()}


def setup(args):
    rng = random.Random(args.seed)
    prompts = ttc.distil_texts(rng, args.captions)
    return prompts, list(prompts)


def lookup(texts, vecs):
    row = {t: i for i, t in enumerate(texts)}

    def encode(batch):
        missing = [t for t in batch if t not in row]
        if missing:
            raise KeyError(missing[:3])
        return vecs[[row[t] for t in batch]]
    return encode


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=("targets", "student"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--captions", type=int, default=40000)
    ap.add_argument("--teacher", default="both")
    ap.add_argument("--glove", type=Path)
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "mdclust-train")
    ap.add_argument("--gloss", type=float, default=0.5)
    ap.add_argument("--dims", default="64")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--lr", type=float, default=4e-3)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--save", type=Path)
    ap.add_argument("--drop", type=int, default=0)
    ap.add_argument("--mlp-ratio", type=float, default=4.0)
    ap.add_argument("--heads", type=int, default=2)
    ap.add_argument("--rel", type=float, default=0.0)
    ap.add_argument("--rel-tau", type=float, default=0.05)
    ap.add_argument("--rel-anchors", type=int, default=4096)
    args = ap.parse_args()
    prompts, texts = setup(args)
    have = set(texts)
    words = {k: [w for w in ws if f"a photo of a {w}." in have] for k, ws in dev_words().items()}
    print({k: len(ws) for k, ws in words.items()}, flush=True)
    t0 = time.time()
    raw = ttc.teacher_vectors(prompts, argparse.Namespace(
        teacher=args.teacher, cache=args.cache, glove=args.glove, gloss=args.gloss))
    if args.what == "targets":
        for d in args.dims.split(","):
            if d == "full":
                vecs = raw
            elif "-" in d:  # "drop-dim": the top `drop` axes removed (all-but-the-top)
                drop, dim = map(int, d.split("-"))
                vecs = ttc.pca_targets(raw, dim, drop)
            else:
                vecs = ttc.pca_targets(raw, int(d))
            enc = lookup(texts, vecs)
            print(json.dumps({"gloss": args.gloss, "dims": d, "dev": dev_accuracy(enc, words),
                              "test": test_accuracy(enc)}), flush=True)
        return
    import open_clip
    import torch

    from mdclust.core.encoders import register_configs

    register_configs()
    cfg = json.loads(json.dumps(open_clip.get_model_config("mdclust-tiny")))
    cfg["text_cfg"].update(layers=args.layers, width=args.width, mlp_ratio=args.mlp_ratio,
                           heads=args.heads)
    torch.manual_seed(args.seed)
    model = open_clip.CLIP(**cfg)
    tokenizer = open_clip.get_tokenizer("mdclust-tiny")
    targets = ttc.pca_targets(raw, cfg["embed_dim"], args.drop)
    ns = argparse.Namespace(text_lr=args.lr, text_steps=args.steps, text_batch=args.batch,
                            seed=args.seed, rel=args.rel, rel_tau=args.rel_tau,
                            rel_anchors=args.rel_anchors)
    cos = ttc.distil_text_tower(model, tokenizer, texts, targets, ns, print)

    def enc(batch):
        return ttc.encode_texts(model, tokenizer, batch).numpy()
    print(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "cosine": cos,
                      "minutes": round((time.time() - t0) / 60, 2),
                      "dev": dev_accuracy(enc, words), "test": test_accuracy(enc)}), flush=True)
    if args.save:
        torch.save(model.state_dict(), args.save)


if __name__ == "__main__":
    main()
