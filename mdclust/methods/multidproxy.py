"""Multi-DProxy (shared/papers/000, 001): interest-specific proxies, gated cross-modal fusion,
dual-constraint optimisation and dynamic candidate management, on cached CLIP features.

This module holds what needs no torch (settings, schedules, candidate management); the network,
losses and the training loop on arrays are in multidproxy_net.py, and mdclust/stages/train.py
adds the store, checkpoints and restarts. docs/methods/multidproxy.md lists every choice the
paper leaves open and the measurement behind it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

EPOCHS, REFINE_EVERY = 1000, 200  # E, R
TAU_ALPHA, SIGMA, TAU_INIT = 0.2, 0.2, 0.1
LR, WEIGHT_DECAY, LAYERS, BATCH = 1e-3, 0.0, 1, 256
LR_GRID = (1e-1, 5e-2, 1e-2, 5e-3, 1e-3, 5e-4)
WD_GRID = (5e-4, 1e-4, 5e-5, 1e-5, 0.0)
REFERENCE = 4096  # images whose tokens every image attends over in the feature pass
TEXT_SIDES = ("identity", "proxy", "linear")
NEGATIVES = ("batch", "groups", "infonce")
REFINE_TIMINGS = ("mid", "end")
FUSE_ON = ("layernorm", "unit")
PROXY_INITS = ("star", "image")
CANDIDATE_SCORES = ("auto", "max", "mean", "specific")


@dataclass
class MultiDProxyConfig:
    """Every setting of a Multi-DProxy run; the defaults are the recommended configuration.

    From the paper (shared/papers/001): E = 1000, R = 200, tau_alpha = sigma = 0.2, tau init
    0.1, Adam with beta1 = 0.9, lr from its grid (LR_GRID: 1e-2 chosen on the dev sets), weight
    decay 0 (in WD_GRID). The fields after ``checkpoint_every`` read points the paper leaves
    open, or are not in the paper at all (marked); ``PAPER`` holds the literal reading. Each
    choice and the dev-set measurement behind it: docs/methods/multidproxy.md."""

    k: int
    epochs: int = EPOCHS
    refine_every: int = REFINE_EVERY
    lr: float = 1e-2
    weight_decay: float = WEIGHT_DECAY
    layers: int = LAYERS
    tau_alpha: float = TAU_ALPHA
    sigma: float = SIGMA
    batch: int = BATCH
    seed: int = 0
    object_word: str = "object"
    candidate_template: str = "{}"
    checkpoint_every: int = 50
    text_side: str = "identity"  # t*_i = [t; w_i] projected by [0 | I] at the start
    negatives: str = "infonce"  # L_c with the own proxy as positive (not in the paper)
    refine_timing: str = "mid"  # halvings at R/2, 3R/2, ...: the final set is trained on
    fuse: str = "layernorm"  # Eq. 4 mixes the LayerNorm outputs, as written
    proxy_align: bool = True  # add 1 - cos(w_i, v_i) to L_align (not in the paper)
    # refinement: best cosine to a centroid (paper: mean); auto: less the mean over centroids
    # ("specific") for WordNet lists, whose hub words lie near every centroid
    candidate_score: str = "auto"
    detach_gate: bool = False  # True: no loss trains lambda (not in the paper)
    proxy_init: str = "star"  # w'_i = f_t("*") (paper) or "image": v_i
    u_weight: float = 0.1  # factor on alpha(t), the weight of L_u (paper: 1)
    restarts: int = 1  # seeds seed .. seed + restarts - 1, one kept (train._pick_restart)
    reference: int = REFERENCE  # images attended over for the stored features


# The paper read literally (Algorithm 1, Eq. 1-8), for comparison with the recommended
# defaults above (docs/methods/multidproxy.md: `--preset paper`).
PAPER = {"text_side": "linear", "negatives": "batch", "refine_timing": "end", "fuse": "layernorm",
         "proxy_align": False, "candidate_score": "mean", "detach_gate": False, "lr": LR,
         "u_weight": 1.0, "proxy_init": "star"}  # lr: 0.1's default, in the paper's grid
PRESETS = {"recommended": {}, "paper": PAPER}


def config_for(k: int, preset: str = "recommended", **given) -> MultiDProxyConfig:
    """A configuration: the preset's values, then every setting given explicitly."""
    if preset not in PRESETS:
        from mdclust.core.errors import MdclustError

        raise MdclustError(f"--preset must be one of {', '.join(PRESETS)}, not {preset!r}")
    return MultiDProxyConfig(k=k, **{**PRESETS[preset], **given})


def alpha_schedule(t: float, epochs: int) -> float:
    """alpha(t) = min(0.5, 0.1 + 0.4 t / E): weight of the user-interest constraint L_u."""
    return min(0.5, 0.1 + 0.4 * t / epochs)


def beta_schedule(t: float, epochs: int) -> float:
    """beta(t) = 0.1 (1 - cos(pi t / E)): weight of the concept-discrimination constraint L_c."""
    return 0.1 * (1 - math.cos(math.pi * t / epochs))


def initial_candidate_count(k: int, epochs: int = EPOCHS, refine_every: int = REFINE_EVERY) -> int:
    """2^beta * M with beta = E / R (Remark 1)."""
    return (2 ** (epochs // refine_every)) * k


def candidate_score_for(score: str, source: str | None) -> str:
    """What ``score`` means for candidates from ``source``: auto is "specific" for the lists
    whose hubs `--hubness auto` corrects everywhere else (`candidates --source wordnet`), "max"
    for every other list (docs/methods/multidproxy.md)."""
    from mdclust.methods.hubness import resolve

    if score != "auto":
        return score
    return "specific" if resolve("auto", source) == "median" else "max"


def refinement_sizes(n_start: int, k: int, rounds: int) -> list[int]:
    """Candidate-set size after each refinement: halved each time (|C|/2), never below M, and
    exactly M after the last one (the paper's 2^beta M start makes these coincide)."""
    sizes, n = [], n_start
    for r in range(rounds):
        n = k if r == rounds - 1 else max(k, n // 2)
        sizes.append(n)
    return sizes


def refinement_epochs(epochs: int, refine_every: int, timing: str = "mid") -> list[int]:
    """Epoch counts after which the candidates are halved: beta = E // R times. "end" is
    Algorithm 1 read literally (t mod R = 0, the last one at t = E, so the final M words are
    never trained on); "mid" keeps the interval R and the count but moves every halving R/2
    earlier, so the final set is trained for R/2 epochs."""
    rounds = epochs // refine_every
    shift = refine_every // 2 if timing == "mid" else 0
    return [max(1, r * refine_every - shift) for r in range(1, rounds + 1)]


def refine_candidates(proxies: np.ndarray, C: np.ndarray, keep: int, k: int, seed: int = 0,
                      score: str = "mean") -> np.ndarray:
    """Dynamic candidate management: k-means of the proxies into M groups, score every
    candidate by its cosine to the M centroids — averaged (the paper) or, with
    ``score="max"``, its best one — and keep the ``keep`` best (indices, sorted)."""
    from mdclust.methods.baselines import kmeans

    score = candidate_score_for(score, None)  # no source known here: auto is max
    labels = kmeans(proxies, k, seed=seed, n_init=3)
    mu = np.stack([proxies[labels == j].mean(0) for j in range(k) if np.any(labels == j)])
    mu = mu / np.linalg.norm(mu, axis=1, keepdims=True).clip(min=1e-12)
    Cn = C / np.linalg.norm(C, axis=1, keepdims=True).clip(min=1e-12)
    sims = Cn @ mu.T
    if score == "max":
        scores = sims.max(1)
    elif score == "specific":  # close to one centroid, not to all: hub words score low
        scores = sims.max(1) - sims.mean(1)
    else:
        scores = sims.mean(1)
    return np.sort(np.argsort(-scores, kind="stable")[:keep])


def reference_index(n: int, size: int, seed: int) -> np.ndarray:
    """A fixed, seeded set of at most ``size`` images (sorted indices; all when n <= size)."""
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))
