"""Multi-DProxy design study on the DEV sets only (the choices in docs/methods/multidproxy.md).

Each configuration is trained on every aspect of every dev set of benchmarks/quality.py
(DEV_SEEDS, 600 images, mdclust-tiny, the candidate files of examples/interests) for the given
training seeds, and scored by NMI of k-means on the fused features (10 k-means seeds, the
`mdclust eval` protocol) and by the refined candidates against the values present. Test sets are
never touched here; benchmarks/multidproxy_report.py reports the chosen default on them.

    python benchmarks/multidproxy_study.py --configs paper R R-proxy R-prompt \
        --seeds 0 1 [--procs 2] [--epochs 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from mdclust.methods.multidproxy import PAPER  # noqa: E402

# Each configuration differs from MultiDProxyConfig() in these fields. "R" is the candidate
# recommendation; "R-x" changes one thing in it; "paper" is methods.multidproxy.PAPER.
R = {"text_side": "identity", "negatives": "infonce", "refine_timing": "mid", "fuse": "unit",
     "proxy_align": True, "candidate_score": "max", "detach_gate": True, "lr": 0.01,
     "u_weight": 0.0}
CONFIGS = {
    "paper": {**R, **PAPER},
    "R": R,
    "R-u.1": {**R, "u_weight": 0.1},
    "R-u1": {**R, "u_weight": 1.0},
    "R-noalign": {**R, "proxy_align": False},
    "R-nodetach": {**R, "detach_gate": False},
    "R-mean": {**R, "candidate_score": "mean"},
    "R-specific": {**R, "candidate_score": "specific"},
    "R-layernorm": {**R, "fuse": "layernorm"},
    "R-lr3": {**R, "lr": 1e-3},
    "R-proxy": {**R, "text_side": "proxy"},
    "R-linear": {**R, "text_side": "linear"},
    "R-prompt": {**R, "text_side": "prompt"},  # Multi-MaP: proxy in the prompt's "*" slot
    "R-end": {**R, "refine_timing": "end"},
    "R-batch": {**R, "negatives": "batch"},
    "R-groups": {**R, "negatives": "groups"},
    "R-image": {**R, "proxy_init": "image"},
    "F": {**R, "u_weight": 0.1, "fuse": "layernorm"},  # F-nodetach = the recommended defaults
    "F-nodetach": {**R, "u_weight": 0.1, "fuse": "layernorm", "detach_gate": False},
    "F-unit": {**R, "u_weight": 0.1},
    "F-u1": {**R, "fuse": "layernorm", "u_weight": 1.0},
}


def prepare(seed: int, n: int, workdir: Path) -> Path:
    """Features, labels and candidate/prompt features of one set, as one .npz per aspect."""
    from quality import embedded_set, interest_file

    from mdclust.core.features import load_image_features
    from mdclust.core.textcache import text_features
    from mdclust.datasets import ASPECTS
    from mdclust.stages.candidates import candidates
    from mdclust.stages.train import prompt_for

    out = workdir / f"arrays-{seed}-{n}"
    if (out / "done").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    vocab, store = embedded_set(seed, n, workdir)
    feats = load_image_features(store)
    g = store.read_group("labels")
    table = {a: dict(zip(g["path"], g[a])) for a in g.attrs.get("aspects", [])}
    for aspect in ASPECTS:
        words = candidates(store, aspect, from_file=interest_file(aspect),
                           k=len(vocab[aspect]["present"]), refresh=True).words
        C = text_features(store, words, "{}", model=feats.key)
        prompt, star = text_features(store, [prompt_for(aspect, "object"), "*"], "{}",
                                     model=feats.key)
        truth = [table[aspect][p] for p in feats.paths]
        np.savez(out / f"{aspect}.npz", v=feats.vectors, C=C, prompt=prompt, star=star,
                 words=np.array(words), truth=np.array(truth),
                 present=np.array(vocab[aspect]["present"]), k=len(vocab[aspect]["present"]))
    (out / "done").write_text("")
    return out


class PromptEncoder:
    """The Multi-MaP reading of t*_i: the proxy (a token embedding) fills the "*" slot of
    "A object with <u> of *" and the prompt goes through mdclust-tiny's frozen text encoder."""

    @staticmethod
    def build(aspect: str, words: list[str]):
        import open_clip
        import torch
        from torch import nn

        from mdclust.core.encoders import ClipEncoder, model_spec
        from mdclust.stages.train import prompt_for

        enc = ClipEncoder(model_spec("mdclust-tiny"), device="cpu")
        m = enc.model
        tok = open_clip.get_tokenizer("mdclust-tiny")
        tokens = tok([prompt_for(aspect, "object")])
        star_id = int(tok(["*"])[0, 1])
        n = int(tokens.argmax(-1)) + 1
        slot = int((tokens[0] == star_id).nonzero()[0, 0])
        for p in m.parameters():
            p.requires_grad_(False)

        class Encode(nn.Module):
            def __init__(self):
                super().__init__()
                self.m = m
                self.register_buffer("emb", m.token_embedding(tokens[:, :n]).detach())

            def forward(self, w):
                x = self.emb.expand(len(w), -1, -1).clone()
                x[:, slot] = w
                x = x + self.m.positional_embedding[:n]
                x = self.m.transformer(x, attn_mask=self.m.attn_mask[:n, :n])
                x = self.m.ln_final(x)[:, n - 1]
                x = x @ self.m.text_projection
                return torch.nn.functional.normalize(x, dim=-1)

        def token_space(texts):
            t = tok(texts)
            ends = t.argmax(-1)
            with torch.no_grad():
                e = m.token_embedding(t)
            return np.stack([e[i, 1:ends[i]].mean(0).numpy() for i in range(len(texts))])

        return Encode(), token_space(words), token_space(["*"])[0]


def run_one(job: tuple) -> dict:
    import torch

    torch.set_num_threads(1)
    from mdclust.core.metrics import scores
    from mdclust.methods.baselines import kmeans
    from mdclust.methods.multidproxy import MultiDProxyConfig
    from mdclust.methods.multidproxy_net import Fit

    path, name, seed, epochs = job
    d = np.load(path)
    aspect = Path(path).stem
    words, truth, present = list(d["words"]), list(d["truth"]), set(d["present"])
    over = dict(CONFIGS[name])
    cfg = replace(MultiDProxyConfig(k=int(d["k"]), seed=seed, epochs=epochs,
                                    refine_every=max(1, 200 * epochs // 1000)),
                  **{**over, "text_side": "proxy" if over["text_side"] == "prompt"
                     else over["text_side"]})
    C, star, encoder = d["C"], d["star"], None
    if over.get("text_side") == "prompt":
        encoder, C, star = PromptEncoder.build(aspect, words)
    t0 = time.perf_counter()
    fit = Fit(d["v"], C, d["prompt"], star, cfg, text_encoder=encoder)
    fit.run()
    fused = fit.fused()
    nmi = [scores(truth, kmeans(fused, cfg.k, seed=s))["nmi"] for s in range(10)]
    prox = scores(truth, kmeans(fit.all_proxies(), cfg.k, seed=0))["nmi"]
    kept = [str(words[i]) for i in fit.active]
    return {"set": Path(path).parent.name, "aspect": aspect, "config": name, "seed": seed,
            "epochs": epochs,
            "nmi": float(np.mean(nmi)), "proxy_nmi": prox, "lambda": fit.curves["lambda"][-1],
            "precision": sum(w in present for w in kept) / len(kept), "kept": kept,
            "seconds": round(time.perf_counter() - t0, 1)}


def table(files: list[Path]) -> str:
    """A markdown table of saved rows: mean NMI per configuration and aspect (sets x seeds),
    the lowest run, and the share of refined words that are values present."""
    rows = [json.loads(line) for f in files for line in f.read_text().splitlines() if line]
    aspects = sorted({r["aspect"] for r in rows})
    out = ["| configuration | epochs | runs | " + " | ".join(aspects) +
           " | mean | lowest | words right |", "|---" * (len(aspects) + 6) + "|"]
    keys = list(dict.fromkeys((r["config"], r.get("epochs", 0)) for r in rows))
    for name, epochs in keys:
        sel = [r for r in rows if r["config"] == name and r.get("epochs", 0) == epochs]
        cells = [f"{np.mean([r['nmi'] for r in sel if r['aspect'] == a]):.3f}" for a in aspects]
        nmi = [r["nmi"] for r in sel]
        out.append(f"| {name} | {epochs} | {len(sel)} | " + " | ".join(cells) +
                   f" | {np.mean(nmi):.3f} | {np.min(nmi):.3f} | "
                   f"{np.mean([r['precision'] for r in sel]):.2f} |")
    return "\n".join(out)


def main() -> None:
    from quality import DEV_SEEDS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=["paper", "R"], choices=list(CONFIGS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--aspects", nargs="+")
    ap.add_argument("--epochs", type=int, default=1000)
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/mdclust-mdp-study"))
    ap.add_argument("--out", type=Path, help="append result rows (JSON lines) here")
    ap.add_argument("--table", type=Path, nargs="+", help="print the table of saved rows")
    args = ap.parse_args()
    if args.table:
        print(table(args.table))
        return
    folders = [prepare(s, args.n, args.workdir) for s in DEV_SEEDS]
    jobs = [(str(f / f"{a}.npz"), c, s, args.epochs) for c in args.configs for f in folders
            for a in (args.aspects or [p.stem for p in sorted(f.glob("*.npz"))])
            for s in args.seeds]
    rows = []
    with ProcessPoolExecutor(args.procs) as pool:
        for row in pool.map(run_one, jobs):
            rows.append(row)
            print(f"{row['config']:<10} {row['set']:<12} {row['aspect']:<10} seed {row['seed']} "
                  f"NMI {row['nmi']:.3f} proxies {row['proxy_nmi']:.3f} "
                  f"lambda {row['lambda']:.2f} prec {row['precision']:.2f} "
                  f"{row['seconds']:.0f}s {row['kept']}", flush=True)
            if args.out:
                with open(args.out, "a") as fh:
                    fh.write(json.dumps(row) + "\n")
    print("\nmean NMI per config and aspect (dev sets x seeds):")
    for c in args.configs:
        by = {}
        for r in rows:
            if r["config"] == c:
                by.setdefault(r["aspect"], []).append(r["nmi"])
        cells = " ".join(f"{a} {np.mean(v):.3f}±{np.std(v):.3f}" for a, v in by.items())
        allv = [x for v in by.values() for x in v]
        print(f"{c:<10} {cells}  | all {np.mean(allv):.3f} min {np.min(allv):.3f}")


if __name__ == "__main__":
    main()
