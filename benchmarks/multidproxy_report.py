"""Multi-DProxy on the quality benchmark's TEST sets: the recommended defaults against the paper
read literally, zeroshot, gradnorm and k-means (docs/methods/multidproxy.md, docs/benchmarks.md).

Every aspect of each test set (benchmarks/quality.py TEST_SEEDS, 600 images, mdclust-tiny, the
candidate files of examples/interests) is trained with training seeds 0..4 for both presets;
each run is scored as `mdclust eval` scores it (NMI of k-means on the fused features, mean over
10 k-means seeds). The baselines run through the product stages (`cluster` + `evaluate`, 10
k-means seeds, as benchmarks/quality.py runs them). The
recommended defaults were chosen on the dev sets only (benchmarks/multidproxy_study.py).

    python benchmarks/multidproxy_report.py [--seeds 0 1 2 3 4] [--procs 2] [--update-docs]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import date
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

PRESETS = ("recommended", "paper")
BASELINES = ("kmeans", "zeroshot", "gradnorm")
BEGIN, END = "<!-- mdp-report:begin -->", "<!-- mdp-report:end -->"
DOCS = (ROOT / "docs" / "methods" / "multidproxy.md", ROOT / "docs" / "benchmarks.md")


def train_one(job: tuple) -> dict:
    """One Multi-DProxy run on arrays: the code `mdclust train` runs, without the store."""
    import torch

    torch.set_num_threads(1)
    from mdclust.core.metrics import scores
    from mdclust.methods.baselines import kmeans
    from mdclust.methods.multidproxy import config_for
    from mdclust.methods.multidproxy_net import Fit

    path, preset, seed = job
    d = np.load(path)
    truth, present = list(d["truth"]), set(d["present"])
    cfg = config_for(int(d["k"]), preset, seed=seed)
    t0 = time.perf_counter()
    fit = Fit(d["v"], d["C"], d["prompt"], d["star"], cfg)
    fit.run()
    fused = fit.fused()
    kept = [str(d["words"][i]) for i in fit.active]
    return {"set": Path(path).parent.name, "aspect": Path(path).stem, "method": preset,
            "seed": seed,
            "nmi": float(np.mean([scores(truth, kmeans(fused, cfg.k, seed=s))["nmi"]
                                  for s in range(10)])),
            "precision": sum(w in present for w in kept) / len(kept), "kept": kept,
            "seconds": round(time.perf_counter() - t0, 1)}


def baselines(seed: int, n: int, workdir: Path) -> list[dict]:
    from quality import interest_file

    from mdclust.core.store import Store
    from mdclust.datasets import ASPECTS, read_vocabulary
    from mdclust.stages.candidates import candidates
    from mdclust.stages.cluster import cluster
    from mdclust.stages.evaluate import evaluate
    from mdclust.stages.filter import filter_nouns

    store = Store(workdir / f"set-{seed}-{n}.h5")
    vocab = read_vocabulary(workdir / f"set-{seed}-{n}")
    rows = []
    for aspect in ASPECTS:
        candidates(store, aspect, from_file=interest_file(aspect),
                   k=len(vocab[aspect]["present"]), refresh=True)
        filter_nouns(store, aspect, method="gradnorm")
        for method in BASELINES:  # as the quality benchmark: seed 0, eval's 10 k-means seeds
            cluster(store, aspect, method=method)
            ev = evaluate(store, aspect, method=method, aspect=aspect, runs=10).to_json()
            rows.append({"set": f"arrays-{seed}-{n}", "aspect": aspect, "method": method,
                         "seed": 0, "nmi": float(np.mean(ev["per_run"]["nmi"])),
                         "per_run": ev["per_run"]["nmi"]})
    return rows


def markdown(rows: list[dict], meta: dict) -> str:
    from mdclust.datasets import ASPECTS

    methods = list(PRESETS) + list(BASELINES)
    lines = [f"Measured {meta['date']} on {meta['machine']}; command: `{meta['command']}` "
             f"({meta['minutes']} min). Test sets: seeds {', '.join(map(str, meta['sets']))}, "
             f"{meta['n']} images each; Multi-DProxy training seeds "
             f"{', '.join(map(str, meta['seeds']))}. NMI mean ± std over sets × seeds (each "
             "value the mean of 10 k-means seeds, as `mdclust eval`); baselines as the quality "
             "benchmark runs them: over sets × 10 k-means seeds (zeroshot: one labelling per "
             "set). recommended = `mdclust train --interest I --method "
             "multidproxy` with no flags; paper = `--preset paper`.", "",
             "| interest | " + " | ".join(methods) + " | kept words right (recommended / "
             "paper) |", "|---" * (len(methods) + 2) + "|"]
    for a in ASPECTS:
        cells = []
        for m in methods:
            vals = [x for r in rows if r["aspect"] == a and r["method"] == m
                    for x in (r["per_run"] if m in BASELINES else [r["nmi"]])]
            cells.append(f"{np.mean(vals):.3f} ± {np.std(vals):.3f}" if vals else "–")
        prec = [np.mean([r["precision"] for r in rows if r["aspect"] == a and r["method"] == p])
                for p in PRESETS]
        lines.append(f"| {a} | " + " | ".join(cells) + f" | {prec[0]:.2f} / {prec[1]:.2f} |")
    return "\n".join(lines) + "\n"


def update_docs(text: str) -> None:
    for path in DOCS:
        doc = path.read_text()
        if BEGIN not in doc or END not in doc:
            raise SystemExit(f"{path} has no {BEGIN} ... {END} section")
        head, rest = doc.split(BEGIN, 1)
        path.write_text(f"{head}{BEGIN}\n{text}{END}{rest.split(END, 1)[1]}")


def main() -> None:
    from multidproxy_study import prepare
    from quality import TEST_SEEDS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--presets", nargs="+", default=list(PRESETS), choices=PRESETS)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/mdclust-mdp-report"))
    ap.add_argument("--json", type=Path, help="write every row here")
    ap.add_argument("--update-docs", action="store_true")
    ap.add_argument("--from-json", type=Path, help="print (and with --update-docs, write) the "
                    "tables of a saved --json run instead of running")
    args = ap.parse_args()
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        text = markdown(saved["rows"], saved["meta"])
        print(text)
        if args.update_docs:
            update_docs(text)
        return
    t0 = time.perf_counter()
    folders = [prepare(s, args.n, args.workdir) for s in TEST_SEEDS]
    rows = [r for s in TEST_SEEDS for r in baselines(s, args.n, args.workdir)]
    jobs = [(str(f / f"{a}.npz"), p, s) for p in args.presets for f in folders
            for a in sorted(x.stem for x in f.glob("*.npz")) for s in args.seeds]
    with ProcessPoolExecutor(args.procs) as pool:
        for row in pool.map(train_one, jobs):
            rows.append(row)
            print(f"{row['method']:<12} {row['set']:<15} {row['aspect']:<10} seed {row['seed']} "
                  f"NMI {row['nmi']:.3f} kept right {row['precision']:.2f} "
                  f"{row['seconds']:.0f}s", flush=True)
    meta = {"date": date.today().isoformat(),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, no GPU",
            "command": "python benchmarks/multidproxy_report.py" +
                       (" --update-docs" if args.update_docs else ""),
            "minutes": round((time.perf_counter() - t0) / 60, 1), "sets": list(TEST_SEEDS),
            "n": args.n, "seeds": args.seeds}
    text = markdown(rows, meta)
    print(text)
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    if args.update_docs:
        update_docs(text)


if __name__ == "__main__":
    main()
