"""Zero-shot accuracy and word knowledge of the bundled mdclust-tiny through the product's path.

Generates fresh images of each world (a seed never used in training), embeds them with
`mdclust embed` (PNG files -> decode -> open_clip preprocessing -> bundled weights), encodes one
prompt per value of each aspect's *full* vocabulary (the set uses all of it, so every value is a
possible answer), and reports per-aspect accuracy of the argmax among all values. `--language`
also reports where WordNet's colour, shape and font words that no training caption uses land
(scripts/language.py), for the model and for its teacher.

    python scripts/eval_tiny_clip.py [--n 1000] [--seed 20000] [--template "a photo of a {}."]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def zero_shot_accuracy(n: int = 1000, seed: int = 20_000, template: str = "a photo of a {}.",
                       workdir: Path | None = None, world: str = "shapes",
                       precision: str = "auto") -> dict[str, float]:
    import numpy as np

    from mdclust.core.encoders import ClipEncoder, model_spec
    from mdclust.core.features import load_image_features
    from mdclust.core.labels import read_labels_csv
    from mdclust.core.store import Store
    from mdclust.datasets import WORLDS
    from mdclust.stages.embed import embed

    mod = WORLDS[world]
    generate = mod.generate_shapes if world == "shapes" else mod.generate_glyphs
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        folder = Path(tmp) / "images"
        labels_csv = generate(folder, n=n, seed=seed, values={a: "all" for a in mod.VOCABULARY})
        store = Store(Path(tmp) / "s.h5")
        embed(folder, store, model="mdclust-tiny", workers=0, batch_size=250,
              precision=precision)
        feats = load_image_features(store)
        labels = read_labels_csv(labels_csv)
    enc = ClipEncoder(model_spec("mdclust-tiny"), device="cpu")
    out = {}
    for aspect, values in mod.VOCABULARY.items():
        text = enc.encode_texts([template.format(v) for v in values])
        pred = (feats.vectors @ text.T).argmax(1)
        truth = np.array([values.index(labels[aspect][p]) for p in feats.paths])
        out[aspect] = round(float((pred == truth).mean()), 4)
    return out


def language_figures(template: str = "a photo of a {}.", teacher: bool = False) -> dict:
    """Where unseen kind words land: the bundled model's text tower (product path), and with
    ``teacher`` the teacher's own space (needs `pip install .[train]`)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import captions
    import language

    from mdclust.core.encoders import ClipEncoder, model_spec

    words = language.kind_words(captions.caption_words())
    enc = ClipEncoder(model_spec("mdclust-tiny"), device="cpu")
    out = {"mdclust-tiny": language.kind_accuracy(enc.encode_texts, words, template)}
    if teacher:
        import teacher as teachers

        model = teachers.MiniLM(teachers.minilm_dir(Path.home() / ".cache" / "mdclust-train"))
        out[model.name] = language.kind_accuracy(model.encode, words, template)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=20_000)
    ap.add_argument("--template", default="a photo of a {}.")
    ap.add_argument("--worlds", nargs="+", default=["shapes", "glyphs"])
    ap.add_argument("--precision", default="auto", help="embed's precision (int8: the image "
                    "tower through ONNX Runtime; texts stay fp32)")
    ap.add_argument("--language", action="store_true", help="also the unseen-word figures")
    ap.add_argument("--teacher", action="store_true", help="and the teacher's own (with "
                    "--language)")
    args = ap.parse_args()
    out = {"n": args.n, "seed": args.seed, "template": args.template,
           "precision": args.precision,
           "accuracy": {w: zero_shot_accuracy(args.n, args.seed, args.template, world=w,
                                              precision=args.precision)
                        for w in args.worlds}}
    if args.language:
        out["language"] = language_figures(args.template, args.teacher)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
