"""The method registry: one entry per clustering method, and the only place that lists them.

Each entry names the method, its kind, the paper it follows, its settings dataclass (holding
the defaults), a store-free ``fit`` over arrays, and for trained methods the stage adapter
that reads its inputs from the store. Entries refer to code by "module:attribute" so that
reading the registry (the CLI does, for --help) imports neither torch nor scikit-learn.

kind:
  "image"     k-means on image features (interest-free);
  "zeroshot"  argmax over the interest's candidates (needs candidates);
  "laic"      GradNorm family: filtered nouns -> text counterpart -> k-means on [e; v]
              (needs `mdclust filter` with the matching score);
  "trained"   features learned by `mdclust train`, then k-means.

Adding a method: write methods/<name>.py (settings dataclass with cited defaults, ``fit``), add
one entry below; a trained method also gets a stage adapter (see stages/train_pipcdr.py).
docs/architecture.md walks through it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from mdclust.core.errors import BadInput
from mdclust.core.threads import configure as configure_threads

# Methods load torch, faiss and scikit-learn: their thread policy (MDCLUST_THREADS, idle
# threads sleep) must be in the environment first. core/threads.py says why.
configure_threads()

KINDS = ("image", "zeroshot", "laic", "trained")


@dataclass(frozen=True)
class Method:
    name: str
    kind: str
    needs_interest: bool
    paper: str
    config: str  # "module:Class", the settings dataclass with the method's defaults
    fit: str  # "module:function", store-free: arrays in, labels or features out
    filter_score: str = ""  # for "laic": which `mdclust filter --method` it reads
    stage: str = ""  # for "trained": "module:function" that trains it on a store

    def load(self, what: str):
        """The object an entry's "module:attribute" field names, imported now."""
        module, _, attr = getattr(self, what).partition(":")
        configure_threads(strict=True)  # a bad MDCLUST_THREADS is BadInput here
        return getattr(importlib.import_module(module), attr)

    def settings(self, **given):
        """The settings dataclass with the defaults, overridden by ``given``."""
        cls = self.load("config")
        names = set(cls.__dataclass_fields__)
        unknown = sorted(set(given) - names)
        if unknown:
            raise BadInput(f"{self.name} has no setting {', '.join(unknown)}; "
                           f"it has {', '.join(sorted(names))}")
        return cls(**given)


_B, _G = "mdclust.methods.baselines", "mdclust.methods.gradnorm"
METHODS = {m.name: m for m in [
    Method("kmeans", "image", False, "k-means++ (scikit-learn), 10 initialisations",
           f"{_B}:KMeansConfig", f"{_B}:kmeans"),
    Method("zeroshot", "zeroshot", True, "CLIP zero-shot over the candidates (CLIP_GPT, "
           "shared/papers/001)", f"{_B}:ZeroShotConfig", f"{_B}:zero_shot"),
    Method("gradnorm", "laic", True, "GradNorm (shared/papers/003)", f"{_G}:LaICConfig",
           f"{_G}:fit", filter_score="gradnorm"),
    Method("tac", "laic", True, "TAC, the MSP score (shared/papers/003, Eq. 12)",
           f"{_G}:LaICConfig", f"{_G}:fit", filter_score="msp"),
    Method("sic", "laic", True, "SIC, the cosine score (shared/papers/003)", f"{_G}:LaICConfig",
           f"{_G}:fit", filter_score="cosine"),
    Method("multidproxy", "trained", True, "Multi-DProxy (shared/papers/000, 001)",
           "mdclust.methods.multidproxy:MultiDProxyConfig",
           "mdclust.methods.multidproxy_net:fit",
           stage="mdclust.stages.train_multidproxy:train_multidproxy"),
    Method("pipcdr", "trained", False, "PIPCDR (shared/papers/002)",
           "mdclust.methods.pipcdr_config:PipcdrConfig", "mdclust.methods.pipcdr:fit",
           stage="mdclust.stages.train_pipcdr:train_pipcdr"),
]}
FILTER_TO_METHOD = {m.filter_score: m.name for m in METHODS.values() if m.filter_score}
TRAINED = tuple(name for name, m in METHODS.items() if m.kind == "trained")


def check_filter(score: str) -> None:
    """BadInput unless ``score`` is a filter's noun score (gradnorm, msp, cosine)."""
    if score not in FILTER_TO_METHOD:
        raise BadInput(f"unknown filter method {score!r}: use {', '.join(FILTER_TO_METHOD)}")


def get(name: str, kind: str | None = None) -> Method:
    """The registry entry of ``name`` (of ``kind`` when given); BadInput otherwise."""
    pool = {n: m for n, m in METHODS.items() if kind is None or m.kind == kind}
    if name not in pool:
        what = "training method" if kind == "trained" else "method"
        raise BadInput(f"unknown {what} {name!r}: use {', '.join(pool)}")
    return pool[name]
