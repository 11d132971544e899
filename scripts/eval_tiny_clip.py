"""Zero-shot accuracy of the bundled mdclust-tiny through the product's own path.

Generates fresh images (a seed never used in training), embeds them with `mdclust embed`
(PNG files -> decode -> open_clip preprocessing -> bundled weights), encodes one prompt per value
of each aspect's *full* vocabulary (the set uses all of it, so every value is a possible answer),
and reports per-aspect accuracy of the argmax among all values.

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
                       workdir: Path | None = None) -> dict[str, float]:
    import numpy as np

    from mdclust.core.encoders import ClipEncoder, model_spec
    from mdclust.core.features import load_image_features
    from mdclust.core.labels import read_labels_csv
    from mdclust.core.store import Store
    from mdclust.datasets import VOCABULARY, generate_shapes
    from mdclust.stages.embed import embed

    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        folder = Path(tmp) / "images"
        labels_csv = generate_shapes(folder, n=n, seed=seed,
                                    values={a: "all" for a in VOCABULARY})
        store = Store(Path(tmp) / "s.h5")
        embed(folder, store, model="mdclust-tiny", workers=0, batch_size=250)
        feats = load_image_features(store)
        labels = read_labels_csv(labels_csv)
    enc = ClipEncoder(model_spec("mdclust-tiny"), device="cpu")
    out = {}
    for aspect, values in VOCABULARY.items():
        text = enc.encode_texts([template.format(v) for v in values])
        pred = (feats.vectors @ text.T).argmax(1)
        truth = np.array([values.index(labels[aspect][p]) for p in feats.paths])
        out[aspect] = round(float((pred == truth).mean()), 4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=20_000)
    ap.add_argument("--template", default="a photo of a {}.")
    args = ap.parse_args()
    print(json.dumps({"n": args.n, "seed": args.seed, "template": args.template,
                      "accuracy": zero_shot_accuracy(args.n, args.seed, args.template)}))


if __name__ == "__main__":
    main()
