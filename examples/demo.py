"""`make demo`: the whole pipeline on bundled data, offline, in about 9 minutes on 2 cores.

1. `mdclust datasets shapes` generates a multi-aspect set: five aspects (color, shape,
   background, count, texture), each a random subset of a larger vocabulary (vocabulary.json);
2. `mdclust embed` encodes it with the bundled tiny CLIP (`mdclust-tiny`), with ground truth;
3. per interest: `mdclust candidates` from examples/interests/shapes/<interest>.txt — what a
   user gets from an LLM: common names, synonyms, near-misses and a few words of the wrong kind,
   never the values present alone (a file so that no network is needed) — then `mdclust
   filter` (GradNorm, MSP, cosine), `mdclust train --method multidproxy`, `mdclust cluster`
   (kmeans, zeroshot, gradnorm, tac, sic, multidproxy) and `mdclust eval --json`;
4. `mdclust info`, then one table: per interest, method, NMI, ARI, ACC, RI (k-means methods:
   mean of 10 runs, the papers' protocol). k is the number of values present, as the papers
   assume k known;
5. `mdclust report`: demo/report/index.html, the clusterings to look at (named clusters,
   thumbnails, confusion matrices, colour x shape and the other cross-tabs, feature maps).
"""

from __future__ import annotations

import json
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


def mdclust_json(*args: str) -> dict:
    out = subprocess.run([str(BIN / "mdclust"), *args, "--json"], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


METHODS = ("kmeans", "zeroshot", "gradnorm", "tac", "sic", "multidproxy")
# Multi-DProxy runs with its defaults (docs/methods/multidproxy.md): no flags.
MDP_ARGS: tuple[str, ...] = ()
FILTERS = ("gradnorm", "msp", "cosine")


def main() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    images = DEMO / "images"
    if not (images / "vocabulary.json").is_file():  # absent too in a set made by mdclust 0.1
        STORE.unlink(missing_ok=True)
        mdclust("datasets", "shapes", str(images), "--n", str(N), "--seed", "7")
    mdclust("embed", str(images), "--store", str(STORE), "--model", "mdclust-tiny",
            "--labels", str(images / "labels.csv"))
    vocab = json.loads((images / "vocabulary.json").read_text())
    rows = []
    for interest, v in vocab.items():
        k = len(v["present"])
        s = ["--store", str(STORE), "--interest", interest]
        words = ROOT / "examples" / "interests" / "shapes" / f"{interest}.txt"
        mdclust("candidates", *s, "--from-file", str(words), "--k", str(k))
        for score in FILTERS:
            mdclust("filter", *s, "--method", score, "--quiet")
        mdclust("train", *s, "--method", "multidproxy", *MDP_ARGS)
        for method in METHODS:
            mdclust("cluster", *s, "--method", method, "--quiet")
            rows.append(mdclust_json("eval", *s, "--method", method))
    mdclust("info", "--store", str(STORE))

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{N} demo images, mdclust-tiny features; ground truth = the interest")
    for col in ("interest", "method", "k", "runs", "NMI", "ARI", "ACC", "RI"):
        table.add_column(col, justify="left" if col in ("interest", "method") else "right")
    for r in rows:
        table.add_row(r["interest"], r["method"], str(r["k"]), str(r["runs"]),
                      *(f"{r[m]:.3f}" for m in ("nmi", "ari", "acc", "ri")))
    Console().print(table)
    print("kmeans ignores the interest and finds the same grouping whatever is asked; the\n"
          "interest-driven methods follow the interest, each as well as its candidates allow.\n"
          "Measured on held-out sets: docs/benchmarks.md (benchmarks/quality.py).")
    # The report: every interest's clusterings, named, with thumbnails and cross-tabs.
    mdclust("report", "--store", str(STORE), "--out", str(DEMO / "report"), "--quiet")
    print(f"\nOpen the report: {(DEMO / 'report' / 'index.html').resolve().as_uri()}")


if __name__ == "__main__":
    main()
