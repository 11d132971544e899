"""The demo's pipeline through the Python API: generate images, embed them, then per interest
candidates -> filter -> cluster -> evaluate. Prints {method: {interest: NMI}} as JSON.

    python examples/python_api.py --workdir /tmp/mdclust-api --n 300
"""

import argparse
import json
from pathlib import Path

import mdclust
from mdclust.datasets import generate_shapes, read_vocabulary

INTERESTS = Path(__file__).parent / "interests" / "shapes"  # candidates as an LLM gives them


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("demo-api"))
    ap.add_argument("--n", type=int, default=300)
    args = ap.parse_args()

    labels = generate_shapes(args.workdir / "images", n=args.n, seed=0)
    store = mdclust.Store(args.workdir / "mdclust.h5")
    mdclust.embed(args.workdir / "images", store, model="mdclust-tiny", labels=labels)
    table: dict[str, dict[str, float]] = {"kmeans": {}, "gradnorm": {}}
    for interest, values in read_vocabulary(args.workdir / "images").items():
        if interest not in ("color", "shape"):
            continue
        k = len(values["present"])  # k known, as the papers assume
        mdclust.candidates(store, interest, from_file=INTERESTS / f"{interest}.txt", k=k)
        mdclust.filter_nouns(store, interest)
        for method in table:
            mdclust.cluster(store, interest, method=method, k=k)
            table[method][interest] = mdclust.evaluate(store, interest, method=method).nmi
    print(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
