"""`make demo`: the whole pipeline on bundled data, offline, in about 7 minutes on 2 cores.

1. `mdclust datasets shapes` generates a multi-aspect set: five aspects (color, shape,
   background, count, texture), each a random subset of a larger vocabulary (vocabulary.json);
2. `mdclust embed` encodes it with the bundled tiny CLIP (`mdclust-tiny`), with ground truth;
3. per interest: `mdclust candidates` from examples/interests/shapes/<interest>.txt — what a
   user gets from an LLM: common names, synonyms, near-misses and a few words of the wrong kind,
   never the values present alone (a file so that no network is needed) — then `mdclust
   filter` (GradNorm, MSP, cosine), `mdclust train --method multidproxy`, `mdclust cluster`
   (kmeans, zeroshot, gradnorm, tac, sic, multidproxy) and `mdclust eval --json`, several
   methods per command. The interests run side by side, one per core (at most DEMO_JOBS at
   once, default: the cores), each command with MDCLUST_THREADS = cores / jobs: commands on
   one store wait for each other only while they commit (docs/store.md);
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
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DEMO = Path(os.environ.get("DEMO_DIR", ROOT / "demo"))
STORE = DEMO / "mdclust.h5"
N = int(os.environ.get("DEMO_N", "600"))


_PRINT = threading.Lock()


def mdclust(*args: str) -> None:
    print(f"$ mdclust {' '.join(args)}", flush=True)
    subprocess.run([str(BIN / "mdclust"), *args], check=True)


def mdclust_in_lane(*args: str, env: dict, as_json: bool = False) -> dict | None:
    """One command of a lane: its output is shown whole when it ends, not interleaved."""
    with _PRINT:
        print(f"$ mdclust {' '.join(args)}" + (" --json" if as_json else ""), flush=True)
    r = subprocess.run([str(BIN / "mdclust"), *args, *(["--json"] if as_json else [])],
                       capture_output=True, text=True, env=env)
    with _PRINT:
        shown = r.stderr if as_json else r.stdout + r.stderr
        if shown.strip():
            print(shown.rstrip(), flush=True)
    if r.returncode:
        raise SystemExit(f"demo: `mdclust {args[0]}` failed (exit {r.returncode})")
    return json.loads(r.stdout) if as_json else None


def lanes() -> tuple[int, dict]:
    """How many interests run at once, and the environment of their commands."""
    cores = os.cpu_count() or 1
    jobs = max(1, int(os.environ.get("DEMO_JOBS", cores)))
    env = dict(os.environ)
    # one thread per command when they share the cores: no OpenMP spinning against each
    # other (docs/benchmarks.md, "Two commands at once"); a setting of the user's wins
    env.setdefault("MDCLUST_THREADS", str(max(1, cores // jobs)))
    return jobs, env


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
    jobs, env = lanes()

    def interest_rows(interest: str) -> list[dict]:
        k = len(vocab[interest]["present"])
        s = ["--store", str(STORE), "--interest", interest]
        words = ROOT / "examples" / "interests" / "shapes" / f"{interest}.txt"
        mdclust_in_lane("candidates", *s, "--from-file", str(words), "--k", str(k), env=env)
        # several methods per command: each command start costs ~2 s of imports
        mdclust_in_lane("filter", *s, "--method", ",".join(FILTERS), env=env)
        mdclust_in_lane("train", *s, "--method", "multidproxy", *MDP_ARGS, env=env)
        mdclust_in_lane("cluster", *s, "--method", ",".join(METHODS), "--quiet", env=env)
        return mdclust_in_lane("eval", *s, "--method", ",".join(METHODS), env=env,
                               as_json=True)["results"]

    with ThreadPoolExecutor(max_workers=min(jobs, len(vocab))) as pool:
        per_interest = list(pool.map(interest_rows, vocab))
    rows = [r for rs in per_interest for r in rs]
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
