"""Several methods in one command: the image features read once or once per method.

A synthetic store of N images (benchmarks/scale.py's build_store), then `mdclust cluster` and
`mdclust eval` with `--method kmeans,zeroshot,gradnorm`, each a child process timed with its
own peak RSS, by this tree's mdclust and, with --baseline, by another checkout's (the same
commands; e.g. a `git worktree` of the commit before the change), alternated.

    python benchmarks/several_methods.py --n 500000 --baseline /tmp/old-tree
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from scale import build_in_child, timed_child  # noqa: E402

METHODS = "kmeans,zeroshot,gradnorm"


def command(tree: Path, store: Path, *args: str) -> list[str]:
    code = f"import sys; sys.path.insert(0, {str(tree)!r}); from mdclust.cli import main; main()"
    return [sys.executable, "-c", code, *args, "--store", str(store), "--json", "--quiet"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500_000)
    ap.add_argument("--baseline", type=Path, help="another checkout to run the same commands")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--workdir", type=Path)
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp())
    store = work / f"several-{args.n}.h5"
    if not store.exists():
        build_in_child(store, args.n, trained=0)
    trees = {"this tree": ROOT, **({"baseline": args.baseline} if args.baseline else {})}
    rows = []
    for rep in range(args.repeats):
        for name, tree in trees.items():
            for step in (["cluster", "-i", "color", "--method", METHODS, "--k", "20"],
                         ["eval", "-i", "color", "--method", METHODS, "--runs", "3"]):
                r = timed_child(command(tree, store, *step))
                r.pop("stdout")
                rows.append({"tree": name, "repeat": rep, "step": step[0], **r})
                print(json.dumps(rows[-1]), flush=True)
    for step in ("cluster", "eval"):
        for name in trees:
            t = sorted(r["seconds"] for r in rows if r["tree"] == name and r["step"] == step)
            m = max(r["peak_rss_gb"] for r in rows if r["tree"] == name and r["step"] == step)
            print(f"{step:<8} {name:<10} seconds {t}  peak RSS {m} GB")


if __name__ == "__main__":
    main()
