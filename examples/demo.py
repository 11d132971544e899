"""`make demo`: the whole pipeline on bundled data, offline, in a couple of minutes on 2 cores.

1. `mdclust datasets shapes` generates a multi-aspect set (color, shape, background);
2. `mdclust embed` encodes it with the bundled tiny CLIP (`mdclust-tiny`), with ground truth;
3. `mdclust info` shows the store;
4. a table per interest: zero-shot CLIP over the interest's values, and k-means on the image
   features, scored against the ground truth (NMI, ARI, ACC, RI).
Later stages (candidates, filter, cluster, train, eval) replace step 4's direct calls as they land.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DEMO = Path(os.environ.get("DEMO_DIR", ROOT / "demo"))
STORE = DEMO / "mdclust.h5"
N = int(os.environ.get("DEMO_N", "600"))


def mdclust(*args: str) -> None:
    print(f"$ mdclust {' '.join(args)}", flush=True)
    subprocess.run([str(BIN / "mdclust"), *args], check=True)


def main() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    images = DEMO / "images"
    if not (images / "labels.csv").is_file():
        mdclust("datasets", "shapes", str(images), "--n", str(N), "--seed", "7")
    mdclust("embed", str(images), "--store", str(STORE), "--model", "mdclust-tiny",
            "--labels", str(images / "labels.csv"))
    mdclust("info", "--store", str(STORE))

    from rich.console import Console
    from rich.table import Table
    from sklearn.cluster import KMeans

    from mdclust.datasets import ASPECTS
    from mdclust.encoders import ClipEncoder, model_spec
    from mdclust.features import load_image_features
    from mdclust.metrics import scores
    from mdclust.store import Store

    store = Store(STORE)
    feats = load_image_features(store, "mdclust-tiny")
    labels = store.read_group("labels")
    truth = {a: dict(zip(labels["path"], labels[a])) for a in ASPECTS}
    enc = ClipEncoder(model_spec("mdclust-tiny"), device="cpu")
    table = Table(title=f"{len(feats.paths)} demo images, mdclust-tiny features")
    for col in ("interest", "method", "k", "NMI", "ARI", "ACC", "RI"):
        table.add_column(col, justify="left" if col in ("interest", "method") else "right")
    for aspect, values in ASPECTS.items():
        t = [truth[aspect][p] for p in feats.paths]
        text = enc.encode_texts([f"a photo of a {v}." for v in values])
        methods = {
            "zeroshot": (feats.vectors @ text.T).argmax(1),
            "kmeans": KMeans(len(values), n_init=10, random_state=0).fit_predict(feats.vectors),
        }
        for name, pred in methods.items():
            s = scores(t, pred)
            table.add_row(aspect, name, str(len(values)),
                          *(f"{s[m]:.3f}" for m in ("nmi", "ari", "acc", "ri")))
    Console().print(table)
    print("k-means ignores the interest: it finds one grouping for every interest, which is the "
          "problem the interest-driven methods solve.")


if __name__ == "__main__":
    main()
