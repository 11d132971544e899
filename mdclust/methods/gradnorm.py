"""GradNorm noun filtering and its special cases TAC (MSP) and SIC (cosine), after
shared/papers/003 (Language-assisted Image Clustering). Notation follows the paper:
E image features (n, d), R noun text features (m, d), W classifier weights (d, C), all unit
vectors; docs/methods/gradnorm.md lists every choice the paper leaves open.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from mdclust.core.rows import ConcatRows
from mdclust.methods.hubness import similarities

TAU = 1 / 0.08  # classifier temperature tau (paper: fixed for all datasets)
KAPPA = 0.006  # text-counterpart temperature kappa, for CLIP's cosines (logit scale 100)
# The paper's kappa is a temperature on cosines of CLIP, whose learned logit scale is 100 (the
# OpenAI and LAION ViTs all end at that clamp). Another model's cosines spread in units of its
# own scale (mdclust-tiny's is 23), so kappa is taken in those units: the paper's value for
# CLIP, 0.026 for mdclust-tiny (docs/methods/gradnorm.md has the dev measurement).
CLIP_LOGIT_SCALE = 100.0
BETA = 5  # nouns kept per pseudo-class
EPOCHS, LR, BATCH = 30, 1e-3, 2048  # Adam, as in the paper
SCORES = ("gradnorm", "msp", "cosine")
# Above SAMPLE images the filter scores the nouns on a seeded sample of SAMPLE of them, with at
# most SAMPLE / SAMPLE_PER_CLASS pseudo-classes: the paper's C = N/600 makes the filter grow as
# N^2 (20 min at 1M on 2 CPUs); docs/methods/gradnorm.md has the measurement behind it.
SAMPLE = 60_000
SAMPLE_PER_CLASS = 300


@dataclass
class LaICConfig:
    """GradNorm / TAC / SIC settings; defaults are the paper's (shared/papers/003, Sec. 4)."""

    k: int
    score: str = "gradnorm"  # gradnorm, msp (TAC) or cosine (SIC)
    clusters: int | None = None  # pseudo-classes C [n_pseudo_classes(n, k)]
    beta: int = BETA
    tau: float = TAU
    kappa: float = KAPPA  # plain arrays carry no model: CLIP's; `cluster` scales it (kappa_for)
    epochs: int = EPOCHS
    lr: float = LR
    batch: int = BATCH
    min_steps: int = 1000
    seed: int = 0


def kappa_for(logit_scale: float | None) -> float:
    """The paper's kappa in units of a model's temperature (1 / ``logit_scale``); the paper's
    own value when the scale is unknown or unusable."""
    return KAPPA * CLIP_LOGIT_SCALE / float(logit_scale) if usable_scale(logit_scale) else KAPPA


def usable_scale(logit_scale: float | None) -> bool:
    return logit_scale is not None and bool(np.isfinite(logit_scale)) and logit_scale > 0


def n_pseudo_classes(n: int, k: int) -> int:
    """C = N/600 when the average cluster (N/K) would exceed 600 images, else 3K (as TAC)."""
    c = round(n / 600) if n / k > 600 else 3 * k
    return int(max(2, min(c, n)))


def sampled(n: int, C: int, sample: int | None, seed: int = 0,
            k: int = 1) -> tuple[np.ndarray | None, int]:
    """(rows of the seeded sample, or None for all n; the pseudo-classes to use) for a filter
    of n images with C pseudo-classes by the paper's rule and ``sample`` (None: all): at most
    sample / SAMPLE_PER_CLASS classes, but never fewer than TAC's 3K."""
    if sample is None or n <= sample:
        return None, C
    rows = np.sort(np.random.default_rng(seed).choice(n, sample, replace=False))
    return rows, int(max(2, min(C, max(sample // SAMPLE_PER_CLASS, 3 * k), sample)))


def softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def normalise_columns(w: np.ndarray) -> np.ndarray:
    return w / np.linalg.norm(w, axis=0, keepdims=True).clip(min=1e-12)


def centroid_weights(E: np.ndarray, y: np.ndarray, C: int) -> np.ndarray:
    """Eq. (12): the tau -> 0 limit of the classifier, normalised class means (d, C)."""
    W = np.stack([E[y == c].mean(0) if np.any(y == c) else np.zeros(E.shape[1])
                  for c in range(C)], axis=1)
    return normalise_columns(W)


def train_cosine_classifier(E: np.ndarray, y: np.ndarray, C: int, *, tau: float = TAU,
                            epochs: int = EPOCHS, lr: float = LR, batch: int = BATCH,
                            min_steps: int = 0, seed: int = 0) -> tuple[np.ndarray, list[float]]:
    """ERM of Eq. (3)-(4) with unit-norm class weights (Theorem 2's ||w_k|| = 1).

    W = V / ||V|| column-wise, V randomly initialised; Adam. Returns the effective W (d, C) and
    the mean loss per epoch. ``min_steps`` lengthens training on small sets (see docs).
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    with warnings.catch_warnings():  # X is only read; features shared between methods are
        warnings.filterwarnings("ignore", "The given NumPy array is not writable")  # read-only
        X = torch.from_numpy(np.ascontiguousarray(E, dtype=np.float32))
    Y = torch.from_numpy(np.asarray(y, dtype=np.int64))
    V = torch.nn.Parameter(torch.randn(E.shape[1], C, generator=g) / np.sqrt(E.shape[1]))
    opt = torch.optim.Adam([V], lr=lr)
    steps_per_epoch = max(1, -(-len(X) // batch))
    epochs = max(epochs, -(-min_steps // steps_per_epoch))
    curve = []
    for _ in range(epochs):
        perm = torch.randperm(len(X), generator=g)
        total = 0.0
        for i in range(0, len(X), batch):
            idx = perm[i:i + batch]
            W = torch.nn.functional.normalize(V, dim=0)
            loss = torch.nn.functional.cross_entropy(tau * X[idx] @ W, Y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        curve.append(total / len(X))
    with torch.no_grad():
        W = torch.nn.functional.normalize(V, dim=0).numpy().astype(np.float64)
    return W, curve


def noun_scores(R: np.ndarray, W: np.ndarray, method: str = "gradnorm",
                tau: float = TAU) -> tuple[np.ndarray, np.ndarray]:
    """Score per noun (lower = more positive) and the pseudo-class it is assigned to.

    gradnorm: Eq. (6), S = tau^2 (sum_k pi_k^2 + 1 - 2 max_k pi_k) = ||d loss / d W||_F^2 for a
              unit-norm text feature and its own argmax as target;
    msp:      Eq. (13), (1 - max_k pi_k)^2, TAC's maximum softmax probability;
    cosine:   Eq. (15), -max_k r^T w_k, SIC's cosine similarity.
    """
    logits = R @ W
    if method == "cosine":
        return -logits.max(1), logits.argmax(1)
    pi = softmax(tau * logits)
    if method == "msp":
        return (1 - pi.max(1)) ** 2, pi.argmax(1)
    if method == "gradnorm":
        return tau ** 2 * ((pi ** 2).sum(1) + 1 - 2 * pi.max(1)), pi.argmax(1)
    raise ValueError(f"unknown score {method!r}; use one of {', '.join(SCORES)}")


def select(scores: np.ndarray, assign: np.ndarray, beta: int = BETA) -> np.ndarray:
    """Eq. (8): in each pseudo-class, the beta nouns with the lowest score (indices, sorted)."""
    keep = []
    for c in np.unique(assign):
        members = np.flatnonzero(assign == c)
        keep.extend(members[np.argsort(scores[members], kind="stable")[:beta]])
    return np.array(sorted(keep), dtype=np.int64)


def text_counterpart(E: np.ndarray, R_sel: np.ndarray, kappa: float = KAPPA,
                     chunk: int = 8192, out: np.ndarray | None = None,
                     shift: np.ndarray | None = None) -> np.ndarray:
    """Eq. (9): v_i = sum_j softmax_j(e_i^T r_j / kappa) r_j, over the selected nouns;
    computed in chunks of rows, into ``out`` when given (e.g. a view of a larger matrix).
    ``shift``: a value per noun subtracted from e_i^T r_j first (mdclust's hubness
    correction, methods/hubness.py; None is the paper's Eq. 9)."""
    if out is None:
        out = np.empty((len(E), R_sel.shape[1]), dtype=np.float32)
    for i in range(0, len(E), chunk):
        out[i:i + chunk] = softmax(similarities(E[i:i + chunk], R_sel, shift) / kappa) @ R_sel
    return out


def image_text_rows(E: np.ndarray, R_sel: np.ndarray, kappa: float = KAPPA,
                    shift: np.ndarray | None = None) -> tuple[np.ndarray, ConcatRows]:
    """V in float16 (as `cluster` stores it, so `eval` reclusters exactly what `cluster` did)
    and [E; V] for k-means, assembled block by block rather than held whole (4 GB at 1M)."""
    V = text_counterpart(E, R_sel, kappa, out=np.empty((len(E), R_sel.shape[1]), np.float16),
                         shift=shift)
    return V, ConcatRows(E, V)


def filter_nouns(E: np.ndarray, R: np.ndarray, cfg: LaICConfig) -> tuple[np.ndarray, np.ndarray,
                                                                        np.ndarray, list[float]]:
    """Stage 1 on arrays: (kept noun indices, their scores, their pseudo-classes, loss curve)."""
    from mdclust.methods.baselines import kmeans

    C = cfg.clusters or n_pseudo_classes(len(E), cfg.k)
    y = kmeans(E, C, seed=cfg.seed, n_init=3)
    curve: list[float] = []
    if cfg.score == "gradnorm":
        W, curve = train_cosine_classifier(E, y, C, tau=cfg.tau, epochs=cfg.epochs, lr=cfg.lr,
                                           batch=cfg.batch, min_steps=cfg.min_steps,
                                           seed=cfg.seed)
    else:  # TAC and SIC are the tau -> 0 limit: normalised class means (Eq. 12)
        W = centroid_weights(E, y, C)
    scores, assign = noun_scores(np.asarray(R, dtype=np.float64), W, cfg.score, cfg.tau)
    keep = select(scores, assign, cfg.beta)
    return keep, scores[keep], assign[keep], curve


def fit(E: np.ndarray, R: np.ndarray, cfg: LaICConfig) -> np.ndarray:
    """LaIC from image features ``E`` and noun features ``R`` (all nouns of the pool): filter
    the nouns, build each image's text counterpart, k-means on [E; V]. Returns labels."""
    from mdclust.methods.baselines import kmeans

    keep = filter_nouns(E, R, cfg)[0]
    return kmeans(image_text_rows(E, R[keep], cfg.kappa)[1], cfg.k, seed=cfg.seed)
