"""Clustering methods. Each name maps to how `mdclust cluster` produces it.

kind:
  "image"     k-means on image features (interest-free);
  "zeroshot"  argmax over the interest's candidates (needs candidates);
  "laic"      GradNorm-family: filtered nouns -> text counterpart -> k-means on [e; v]
              (needs `mdclust filter` with the matching score);
  "trained"   features learned by `mdclust train` (multidproxy, pipcdr), then k-means.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    name: str
    kind: str
    needs_interest: bool
    filter_score: str = ""  # for "laic": which `mdclust filter --method` it reads


METHODS = {m.name: m for m in [
    Method("kmeans", "image", needs_interest=False),
    Method("zeroshot", "zeroshot", needs_interest=True),
    Method("gradnorm", "laic", needs_interest=True, filter_score="gradnorm"),
    Method("tac", "laic", needs_interest=True, filter_score="msp"),
    Method("sic", "laic", needs_interest=True, filter_score="cosine"),
    Method("multidproxy", "trained", needs_interest=True),
    Method("pipcdr", "trained", needs_interest=False),
]}
FILTER_TO_METHOD = {m.filter_score: m.name for m in METHODS.values() if m.filter_score}
