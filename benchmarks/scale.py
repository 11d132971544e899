"""Scale benchmark: synthetic stores of 100k and 1M x 512 features (no images needed), the
commands users run on them, time and peak RSS of each, baselines measured in the same run.

    python benchmarks/scale.py                      # everything (~30 min on 2 cores, ~15 GB disk)
    python benchmarks/scale.py --only commit embed  # some parts
    python benchmarks/scale.py --out benchmarks/results/scale.json
    python benchmarks/scale.py --only 10m           # 10M x 512 (~1 h, ~25 GB disk; not default)

Each command runs as a child process (`mdclust ... --json`), so its peak RSS is its own.
``build_store(path, n, d)`` is importable, to reproduce the figures elsewhere:

    from benchmarks.scale import build_store
    build_store("big.h5", 1_000_000, 512)
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).with_name("mdclust")
MODEL_KEY = "ViT-B-32@openai"
TEMPLATE = "A photo of a {}."
INTEREST = "color"
TRUE_K = 100
BLOCK = 100_000
EMPTY_SKIPPED = {"path": [], "size": np.zeros(0, np.int64), "mtime": np.zeros(0),
                 "sha256": [], "reason": []}


def build_store(path: str | os.PathLike, n: int, d: int = 512, *, k: int = TRUE_K,
                trained: int = 2, candidates: int = 200, seed: int = 0,
                spread: float = 0.6) -> Path:
    """A store as `embed` + `candidates` + `filter` + `train` would leave it, with synthetic
    features: ``n`` unit vectors in ``k`` Gaussian clusters (float16, as embed stores them),
    text features for ``candidates`` words (the first ``k`` near the cluster centres), a
    GradNorm selection of 5 nouns per cluster, and ``trained`` trained feature sets (float32,
    as train stores them). Returns the store's path."""
    from mdclust.core import layout
    from mdclust.core.store import Store
    from mdclust.core.textcache import template_id

    path = Path(path)
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    truth = rng.integers(0, k, n)

    def features(offset: float, dtype=np.float32) -> np.ndarray:
        out = np.empty((n, d), dtype=dtype)  # float16 built as such: 10M x 512 is 10 GB
        for i in range(0, n, BLOCK):
            block = centres[truth[i:i + BLOCK]] + spread / np.sqrt(d) * rng.normal(
                size=(len(truth[i:i + BLOCK]), d)).astype(np.float32) + offset
            out[i:i + BLOCK] = block / np.linalg.norm(block, axis=1, keepdims=True)
        return out

    paths = [f"photos/{i // 1000:04d}/IMG_{i:07d}.jpg" for i in range(n)]
    shas = [hashlib.sha256(p.encode()).hexdigest() for p in paths]
    words = [f"colour{j:03d}" for j in range(candidates)]
    text = np.concatenate([centres, rng.normal(size=(candidates - k, d)).astype(np.float32)])
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    store = Store(path)
    with store.transaction() as txn:
        txn.put_group(layout.IMAGES, {
            "path": paths, "size": np.full(n, 12_345, dtype=np.int64),
            "mtime": np.full(n, 1.7e9), "sha256": shas}, {"root": "/synthetic"})
        txn.put_group(layout.SKIPPED, EMPTY_SKIPPED)
        txn.put_group(layout.features(MODEL_KEY), {
            "sha256": shas, "vectors": features(0.0, np.float16)},
            {"model": "ViT-B-32", "pretrained": "openai", "weights_sha256": "", "dim": d})
        txn.put_group(layout.text_features(MODEL_KEY, template_id(TEMPLATE)), {
            "text": words, "vectors": text.astype(np.float16)},
            {"template": TEMPLATE, "model_key": MODEL_KEY})
        txn.put_group(layout.candidates(INTEREST), {"word": words},
                      {"source": "synthetic", "k": k})
        txn.put_group(layout.filtered(INTEREST, "gradnorm"), {
            "noun": words[:k], "score": np.zeros(k), "pseudo_class": np.arange(k, dtype=np.int32)},
            {"method": "gradnorm", "params": {"template": TEMPLATE, "model_key": MODEL_KEY}})
        for j, method in enumerate(("multidproxy", "pipcdr")[:trained]):
            txn.put_group(layout.trained(INTEREST, method), {
                "path": paths, "fused" if method == "multidproxy" else "features":
                    features(0.01 * (j + 1))}, {"method": method, "params": {}})
    return path


def build_in_child(path: Path, n: int, inline: bool = False, trained: int = 2) -> None:
    """build_store in a child process: a parent that held the arrays would pass its memory
    high-water mark on to every command it starts (Linux keeps ru_maxrss across fork+exec),
    and the peak RSS figures would be the parent's."""
    code = (f"import sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); "
            "import mdclust.core.store as m; "
            + ("m.EXTERNAL_MIN_BYTES = 1 << 62; " if inline else "")
            + f"from scale import build_store; build_store({str(path)!r}, {n}, 512, "
            f"trained={trained})")
    subprocess.run([sys.executable, "-c", code], check=True)


def timed_child(args: list[str]) -> dict:
    """Run a command and return its wall time and its own peak RSS (os.wait4)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed with exit {proc.returncode}")
    return {"seconds": round(seconds, 2), "peak_rss_gb": round(usage.ru_maxrss / 2 ** 20, 2),
            "stdout": out}


def mdclust(*args: str) -> dict:
    r = timed_child([str(BIN), *args, "--json"])
    r["json"] = json.loads(r.pop("stdout"))
    return r


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def part_kmeans_100k(work: Path, out: dict) -> None:
    store = work / "s100k.h5"
    if not store.exists():
        build_in_child(store, 100_000)
    rows = {}
    for backend in ("faiss", "sklearn"):
        r = mdclust("cluster", "--method", "kmeans", "--k", "100", "--backend", backend,
                    "--store", str(store))
        from mdclust import load_clustering

        rows[backend] = {"seconds": r["seconds"], "peak_rss_gb": r["peak_rss_gb"],
                         "labels": load_clustering(store, method="kmeans").labels}
        log(f"100k kmeans {backend}: {r['seconds']} s, {r['peak_rss_gb']} GB")
    from sklearn.metrics import normalized_mutual_info_score

    agree = normalized_mutual_info_score(rows["faiss"]["labels"], rows["sklearn"]["labels"])
    out["kmeans_100k"] = {b: {k: v for k, v in r.items() if k != "labels"}
                          for b, r in rows.items()}
    out["kmeans_100k"]["speedup_faiss_vs_sklearn"] = round(
        rows["sklearn"]["seconds"] / rows["faiss"]["seconds"], 2)
    out["kmeans_100k"]["nmi_faiss_vs_sklearn"] = round(float(agree), 4)


def part_1m(work: Path, out: dict) -> None:
    store = work / "s1m.h5"
    if not store.exists():
        t0 = time.perf_counter()
        build_in_child(store, 1_000_000)
        out["build_1m_seconds"] = round(time.perf_counter() - t0, 1)
    size = store.stat().st_size + sum(p.stat().st_size for p in store.with_name(
        store.name + ".data").glob("*.h5"))
    out["store_1m_gb"] = round(size / 2 ** 30, 2)
    lat = []
    for _ in range(5):
        lat.append(timed_child([str(BIN), "info", "--json", "--store", str(store)])["seconds"])
    out["info_1m_seconds"] = {"median": sorted(lat)[2], "runs": lat}
    log(f"1M info: {lat}")
    for name, args in (("kmeans", ["--method", "kmeans"]), ("zeroshot", ["--method", "zeroshot",
                                                                         "--interest", INTEREST]),
                       ("gradnorm", ["--method", "gradnorm", "--interest", INTEREST])):
        r = mdclust("cluster", *args, "--k", "100", "--store", str(store))
        group = "clusterings/kmeans" if name == "kmeans" else \
            f"interests/{INTEREST}/clusterings/{name}"
        out[f"cluster_{name}_1m"] = {"seconds": r["seconds"], "peak_rss_gb": r["peak_rss_gb"],
                                    "commit": commit_cost(store, group)}
        log(f"1M cluster {name}: {r['seconds']} s, {r['peak_rss_gb']} GB")
    r = mdclust("eval", "--method", "kmeans", "--labels", str(truth_csv(work, 1_000_000)),
                "--aspect", "truth", "--store", str(store))
    out["eval_kmeans_10_runs_1m"] = {"seconds": r["seconds"], "peak_rss_gb": r["peak_rss_gb"],
                                     "nmi": r["json"]["nmi"], "nmi_std": r["json"]["nmi_std"]}
    log(f"1M eval: {r['seconds']} s")
    part_eval_gradnorm(work, out)


def part_eval_gradnorm(work: Path, out: dict) -> None:
    """eval's 10 k-means runs on GradNorm's [E; V] (1M x 1024), built block by block."""
    r = mdclust("eval", "--interest", INTEREST, "--method", "gradnorm", "--labels",
                str(truth_csv(work, 1_000_000)), "--aspect", "truth",
                "--store", str(work / "s1m.h5"))
    out["eval_gradnorm_10_runs_1m"] = {"seconds": r["seconds"], "peak_rss_gb": r["peak_rss_gb"],
                                       "nmi": r["json"]["nmi"], "nmi_std": r["json"]["nmi_std"]}
    log(f"1M eval gradnorm: {r['seconds']} s, {r['peak_rss_gb']} GB")


def part_export(work: Path, out: dict) -> None:
    """`export --out` of the 1M store's kmeans and gradnorm clusterings (GradNorm's group also
    holds 1 GB of text counterparts, which export must not read)."""
    csv = work / "export1m.csv"
    for name, args in (("kmeans", ["--method", "kmeans"]),
                       ("gradnorm", ["--method", "gradnorm", "--interest", INTEREST])):
        r = mdclust("export", *args, "--out", str(csv), "--store", str(work / "s1m.h5"))
        out[f"export_{name}_1m"] = {"seconds": r["seconds"], "peak_rss_gb": r["peak_rss_gb"],
                                    "rows": r["json"]["n"],
                                    "mb": round(csv.stat().st_size / 2 ** 20, 1)}
        log(f"1M export {name}: {r['seconds']} s, {r['peak_rss_gb']} GB")


def part_parquet(work: Path, out: dict) -> None:
    """`export --format parquet` of the 1M store's kmeans clustering against the CSV export of
    the same clustering in the same run (the baseline), and the rows read back equal."""
    store = work / "s1m.h5"
    if not store.exists():
        build_in_child(store, 1_000_000)
    if "kmeans" not in subprocess.run([str(BIN), "info", "--json", "--store", str(store)],
                                      capture_output=True, text=True).stdout:
        mdclust("cluster", "--method", "kmeans", "--k", "100", "--store", str(store))
    csv, pq_file = work / "export1m.csv", work / "export1m.parquet"
    base = mdclust("export", "--method", "kmeans", "--out", str(csv), "--store", str(store))
    r = mdclust("export", "--method", "kmeans", "--format", "parquet", "--out", str(pq_file),
                "--store", str(store))
    import pyarrow.csv as pv
    import pyarrow.parquet as pq

    a = pq.read_table(pq_file)
    b = pv.read_csv(csv, convert_options=pv.ConvertOptions(
        column_types={"path": "string", "cluster": "int32"}))
    same = a.column("path").equals(b.column("path")) and a.column("cluster").equals(
        b.column("cluster"))
    out["export_parquet_1m"] = {
        "seconds": r["seconds"], "peak_rss_gb": r["peak_rss_gb"], "rows": r["json"]["n"],
        "mb": round(pq_file.stat().st_size / 2 ** 20, 1), "rows_equal_csv": bool(same),
        "csv_seconds": base["seconds"], "csv_peak_rss_gb": base["peak_rss_gb"],
        "csv_mb": round(csv.stat().st_size / 2 ** 20, 1)}
    log(f"1M export parquet: {out['export_parquet_1m']}")


def commit_cost(store: Path, path: str, inline: bool = False) -> dict:
    """Time and bytes of the commit `cluster` makes: the clustering group at ``path`` put again
    with changed labels (read first, outside the timing). In a child process, like every
    measurement here (see build_in_child)."""
    code = f"""
import json, sys, time
import numpy as np
import mdclust.core.store as m
if {inline}:
    m.EXTERNAL_MIN_BYTES = 1 << 62
st = m.Store({str(store)!r})
g = st.read_group({path!r})
data = {{**g.data, "label": (np.asarray(g["label"]) + 1) % {TRUE_K}}}
t0 = time.perf_counter()
with st.transaction() as txn:
    txn.put_group({path!r}, data, g.attrs)
print(json.dumps({{"seconds": round(time.perf_counter() - t0, 2),
                  "mb_written": round(st.last_commit["bytes_written"] / 2 ** 20, 1)}}))
"""
    return json.loads(subprocess.run([sys.executable, "-c", code], check=True,
                                     capture_output=True, text=True).stdout)


def truth_csv(work: Path, n: int) -> Path:
    """The planted clusters as a labels CSV (build_store's seed and draw order)."""
    csv = work / f"truth{n}.csv"
    if not csv.exists():
        rng = np.random.default_rng(0)
        rng.normal(size=(TRUE_K, 512))
        truth = rng.integers(0, TRUE_K, n)
        with open(csv, "w") as fh:
            fh.write("path,truth\n")
            for i, t in enumerate(truth):
                fh.write(f"photos/{i // 1000:04d}/IMG_{i:07d}.jpg,c{t}\n")
    return csv


def part_commit_before(work: Path, out: dict) -> None:
    """The commit of a kmeans clustering on a 1M store in the 0.1 layout (every group inside
    one file, so each commit copies it), against the same commit now (part_1m)."""
    store = work / "s1m_inline.h5"
    if not store.exists():
        build_in_child(store, 1_000_000, inline=True)
        code = (f"import numpy as np, mdclust.core.store as m; m.EXTERNAL_MIN_BYTES = 1 << 62; "
                f"st = m.Store({str(store)!r}); p = st.read_group('images')['path']\n"
                "with st.transaction() as t: t.put_group('clusterings/kmeans', {'path': p, "
                "'label': np.zeros(len(p), np.int32)}, {'method': 'kmeans', 'params': {}})")
        subprocess.run([sys.executable, "-c", code], check=True)
    out["commit_kmeans_1m_before"] = commit_cost(store, "clusterings/kmeans", inline=True)
    out["store_1m_inline_gb"] = round(store.stat().st_size / 2 ** 30, 2)
    log(f"1M commit before: {out['commit_kmeans_1m_before']}")


def part_embed_unchanged(work: Path, out: dict, n: int = 100_000) -> None:
    """`mdclust embed` on an unchanged folder of n small files: no decoding, no forward."""
    from PIL import Image

    from mdclust.core import layout
    from mdclust.core.encoders import model_spec
    from mdclust.core.images import sha256_file
    from mdclust.core.store import Store

    folder = work / "files100k"
    store = work / "files100k.h5"
    if not store.exists():
        folder.mkdir(exist_ok=True)
        rng = np.random.default_rng(0)
        entries = []
        for i in range(n):
            p = folder / f"{i // 1000:03d}" / f"{i:06d}.png"
            p.parent.mkdir(exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).save(p)
            st = p.stat()
            entries.append((str(p.relative_to(folder)), st.st_size, st.st_mtime, sha256_file(p)))
        spec = model_spec("mdclust-tiny")
        d = 256
        vecs = rng.normal(size=(n, d)).astype(np.float16)
        with Store(store).transaction() as txn:  # as a first embed would have left it
            txn.put_group(layout.IMAGES, {
                "path": [e[0] for e in entries],
                "size": np.array([e[1] for e in entries], dtype=np.int64),
                "mtime": np.array([e[2] for e in entries]),
                "sha256": [e[3] for e in entries]}, {"root": str(folder.resolve())})
            txn.put_group(layout.SKIPPED, EMPTY_SKIPPED)
            txn.put_group(layout.features(spec.key), {"sha256": [e[3] for e in entries],
                                                      "vectors": vecs},
                          {**spec.attrs(), "dim": d})
    r = mdclust("embed", str(folder), "--model", "mdclust-tiny", "--store", str(store))
    out["embed_unchanged_100k_files"] = {"seconds": r["seconds"],
                                         "peak_rss_gb": r["peak_rss_gb"],
                                         "embedded": r["json"]["embedded"],
                                         "model_loaded": r["json"].get("model_loaded")}
    log(f"embed unchanged 100k: {out['embed_unchanged_100k_files']}")


def part_report(work: Path, out: dict) -> None:
    """`mdclust report` on the 100k-file store of part_embed (real 4x4 PNG thumbnails), after a
    kmeans --k 100 clustering; a second run reuses the thumbnails."""
    store = work / "files100k.h5"
    if not store.exists():
        part_embed_unchanged(work, out)
    mdclust("cluster", "--method", "kmeans", "--k", "100", "--store", str(store))
    report_dir = work / "report100k"
    shutil.rmtree(report_dir, ignore_errors=True)
    first = mdclust("report", "--out", str(report_dir), "--store", str(store))
    again = mdclust("report", "--out", str(report_dir), "--store", str(store))
    thumbs = sum(p.stat().st_size for p in (report_dir / "thumbs").iterdir())
    out["report_100k"] = {"seconds": first["seconds"], "peak_rss_gb": first["peak_rss_gb"],
                          "page_mb": round(first["json"]["page_bytes"] / 1e6, 2),
                          "thumbnails": first["json"]["thumbnails_written"],
                          "thumbs_mb": round(thumbs / 1e6, 2),
                          "rerun_seconds": again["seconds"]}
    log(f"report 100k: {out['report_100k']}")


def part_10m(work: Path, out: dict) -> None:
    """Ten million rows: the stages the issue names, each a child process within 16 GB.
    The store has no trained sets (they are float32: 20 GB each at 10M)."""
    n, store = 10_000_000, work / "s10m.h5"
    res = out.setdefault("10m", {})
    if not store.exists():
        t0 = time.perf_counter()
        build_in_child(store, n, trained=0)
        res["build_seconds"] = round(time.perf_counter() - t0, 1)
    size = store.stat().st_size + sum(p.stat().st_size for p in store.with_name(
        store.name + ".data").glob("*.h5"))
    res["store_gb"] = round(size / 2 ** 30, 2)
    lat = [timed_child([str(BIN), "info", "--json", "--store", str(store)])["seconds"]
           for _ in range(5)]
    res["info"] = {"median_seconds": sorted(lat)[2], "runs": lat}
    log(f"10M info: {lat}")

    def step(name, *args):
        r = mdclust(*args, "--store", str(store))
        res[name] = {"seconds": r["seconds"], "peak_rss_gb": r["peak_rss_gb"]}
        log(f"10M {name}: {res[name]}")
        out_path.write_text(json.dumps(out, indent=1) + "\n")
        return r

    truth = str(truth_csv(work, n))
    step("cluster_kmeans_k1000", "cluster", "--method", "kmeans", "--k", "1000")
    step("cluster_zeroshot_k100", "cluster", "--method", "zeroshot", "--interest", INTEREST,
         "--k", "100")
    step("cluster_gradnorm_k100", "cluster", "--method", "gradnorm", "--interest", INTEREST,
         "--k", "100")
    r = step("eval_gradnorm", "eval", "--method", "gradnorm", "--interest", INTEREST,
             "--labels", truth, "--aspect", "truth")
    res["eval_gradnorm"].update(nmi=r["json"]["nmi"], nmi_std=r["json"]["nmi_std"])
    r = step("eval_zeroshot", "eval", "--method", "zeroshot", "--interest", INTEREST,
             "--labels", truth, "--aspect", "truth")
    res["eval_zeroshot"].update(nmi=r["json"]["nmi"])
    step("export_kmeans_csv", "export", "--method", "kmeans", "--out", str(work / "e10m.csv"))
    step("export_gradnorm_parquet", "export", "--method", "gradnorm", "--interest", INTEREST,
         "--format", "parquet", "--out", str(work / "e10m.parquet"))
    shutil.rmtree(work / "report10m", ignore_errors=True)
    step("report", "report", "--out", str(work / "report10m"))


out_path = ROOT / "benchmarks" / "results" / "scale.json"  # main() sets it from --out

PARTS = {"kmeans100k": part_kmeans_100k, "1m": part_1m, "evalgradnorm": part_eval_gradnorm,
         "export": part_export, "parquet": part_parquet, "commit": part_commit_before,
         "embed": part_embed_unchanged, "report": part_report, "10m": part_10m}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/mdclust-scale"))
    ap.add_argument("--only", nargs="+", choices=list(PARTS),
                    default=[p for p in PARTS if p != "10m"])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "scale.json")
    args = ap.parse_args()
    global out_path
    out_path = args.out
    args.work.mkdir(parents=True, exist_ok=True)
    out = json.loads(args.out.read_text()) if args.out.exists() else {}
    out.update(date=dt.date.today().isoformat(), machine=f"{platform.machine()}, "
               f"{os.cpu_count()} CPUs", command=" ".join(["python", *sys.argv]))
    for name in args.only:
        PARTS[name](args.work, out)
        args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
