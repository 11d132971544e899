"""Multi-DProxy (shared/papers/000, 001): interest-specific proxies, gated cross-modal fusion,
dual-constraint optimisation and dynamic candidate management, on cached CLIP features.

Notation follows the paper: v_i image features, t the prompt feature, w'_i base proxies,
c_k candidate embeddings, w_i = sum_k alpha_ik c_k proxies, F fused features.
docs/methods/multidproxy.md lists every choice the paper leaves open.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

EPOCHS, REFINE_EVERY = 1000, 200  # E, R
TAU_ALPHA, SIGMA, TAU_INIT = 0.2, 0.2, 0.1
LR, WEIGHT_DECAY, LAYERS, BATCH = 1e-3, 0.0, 1, 256
LR_GRID = (1e-1, 5e-2, 1e-2, 5e-3, 1e-3, 5e-4)
WD_GRID = (5e-4, 1e-4, 5e-5, 1e-5, 0.0)


def alpha_schedule(t: float, epochs: int) -> float:
    """alpha(t) = min(0.5, 0.1 + 0.4 t / E): weight of the user-interest constraint L_u."""
    return min(0.5, 0.1 + 0.4 * t / epochs)


def beta_schedule(t: float, epochs: int) -> float:
    """beta(t) = 0.1 (1 - cos(pi t / E)): weight of the concept-discrimination constraint L_c."""
    return 0.1 * (1 - math.cos(math.pi * t / epochs))


def initial_candidate_count(k: int, epochs: int = EPOCHS, refine_every: int = REFINE_EVERY) -> int:
    """2^beta * M with beta = E / R (Remark 1)."""
    return (2 ** (epochs // refine_every)) * k


def refinement_sizes(n_start: int, k: int, rounds: int) -> list[int]:
    """Candidate-set size after each refinement: halved each time (|C|/2), never below M, and
    exactly M after the last one (the paper's 2^beta M start makes these coincide)."""
    sizes, n = [], n_start
    for r in range(rounds):
        n = k if r == rounds - 1 else max(k, n // 2)
        sizes.append(n)
    return sizes


def _heads(d: int) -> int:
    return next(h for h in (8, 4, 2, 1) if d % h == 0 and d // h >= 8) if d >= 8 else 1


class GatedFusionLayer(nn.Module):
    """Eq. (1)-(3) on the set of samples: V = {v_i} and T = {t*_i} are sequences (one token per
    image), so every image attends over the proxies of the other images and every proxy over the
    images; sigmoid-gated residuals on [X; X_attn]; then LayerNorm(X + FFN(X))."""

    def __init__(self, d: int, heads: int | None = None, ffn_mult: int = 2):
        super().__init__()
        heads = heads or _heads(d)
        self.attn_v = nn.MultiheadAttention(d, heads, batch_first=True)
        self.attn_t = nn.MultiheadAttention(d, heads, batch_first=True)
        self.gate_v = nn.Linear(2 * d, d)
        self.gate_t = nn.Linear(2 * d, d)
        self.ffn_v = nn.Sequential(nn.Linear(d, ffn_mult * d), nn.GELU(),
                                   nn.Linear(ffn_mult * d, d))
        self.ffn_t = nn.Sequential(nn.Linear(d, ffn_mult * d), nn.GELU(),
                                   nn.Linear(ffn_mult * d, d))
        self.norm_v = nn.LayerNorm(d)
        self.norm_t = nn.LayerNorm(d)
        self.last_gates: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, V: torch.Tensor, T: torch.Tensor, V_keys: torch.Tensor | None = None,
                T_keys: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """V, T: (n, d) queries; V_keys, T_keys: the set attended over (default: V, T)."""
        V_keys = V if V_keys is None else V_keys
        T_keys = T if T_keys is None else T_keys
        V_attn, _ = self.attn_v(V[None], T_keys[None], T_keys[None], need_weights=False)
        T_attn, _ = self.attn_t(T[None], V_keys[None], V_keys[None], need_weights=False)
        V_attn, T_attn = V_attn[0], T_attn[0]
        g_v = torch.sigmoid(self.gate_v(torch.cat([V, V_attn], dim=-1)))
        g_t = torch.sigmoid(self.gate_t(torch.cat([T, T_attn], dim=-1)))
        self.last_gates = (g_v.detach(), g_t.detach())
        V = V + g_v * V_attn
        T = T + g_t * T_attn
        return self.norm_v(V + self.ffn_v(V)), self.norm_t(T + self.ffn_t(T))


class MultiDProxy(nn.Module):
    """Text token t*_i = P[t; w_i] (the prompt feature and the proxy, projected to d); L fusion
    layers over the set; lambda = sigmoid(mean_i cos(T^L_i, V^L_i) / tau), one weight for the
    set, tau learnable (init 0.1); F_i = lambda T^L_i + (1 - lambda) V^L_i on unit vectors
    (Eq. 4)."""

    def __init__(self, n_images: int, d: int, base_proxy: np.ndarray, layers: int = LAYERS,
                 tau_alpha: float = TAU_ALPHA, tau_init: float = TAU_INIT):
        super().__init__()
        init = torch.as_tensor(base_proxy, dtype=torch.float32).reshape(1, d)
        self.base_proxies = nn.Parameter(init.repeat(n_images, 1))  # w'_i = f_t("*")
        self.text_in = nn.Linear(2 * d, d)
        self.layers = nn.ModuleList(GatedFusionLayer(d) for _ in range(layers))
        self.log_tau = nn.Parameter(torch.tensor(math.log(tau_init)))
        self.tau_alpha = tau_alpha

    @property
    def tau(self) -> torch.Tensor:
        return self.log_tau.exp()  # kept positive

    def proxies(self, idx: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
        """Eq. (5): w_i = sum_k softmax_k(w'_i . c_k / tau_alpha) c_k."""
        alpha = torch.softmax(self.base_proxies[idx] @ C.T / self.tau_alpha, dim=-1)
        return alpha @ C

    def _fuse(self, V_L: torch.Tensor, T_L: torch.Tensor, detach_gate: bool = False):
        # <T^L, V^L> is the inner product of the two sets (matrices), so lambda is one weight
        # for the set; dividing by its size keeps it independent of the batch size.
        V_L, T_L = F.normalize(V_L, dim=-1), F.normalize(T_L, dim=-1)
        agree = (T_L * V_L).sum(-1, keepdim=True).mean()
        lam = torch.sigmoid(agree / self.tau).expand(len(V_L), 1)
        if detach_gate:  # lambda measures agreement; the losses do not steer it
            lam = lam.detach()
        return lam * T_L + (1 - lam) * V_L, lam

    def forward(self, v: torch.Tensor, t: torch.Tensor, w: torch.Tensor,
                detach_gate: bool = False):
        V = v
        T = self.text_in(torch.cat([t.expand_as(w), w], dim=-1))
        for layer in self.layers:
            V, T = layer(V, T)
        return self._fuse(V, T, detach_gate)

    @torch.no_grad()
    def forward_full(self, v: torch.Tensor, t: torch.Tensor, w: torch.Tensor,
                     chunk: int = 2048):
        """The same map with the whole collection as the attended set (inference)."""
        V = v
        T = self.text_in(torch.cat([t.expand_as(w), w], dim=-1))
        for layer in self.layers:
            parts = [layer(V[i:i + chunk], T[i:i + chunk], V, T) for i in range(0, len(V), chunk)]
            V = torch.cat([p[0] for p in parts])
            T = torch.cat([p[1] for p in parts])
        return self._fuse(V, T)


def losses(f: torch.Tensor, v: torch.Tensor, w: torch.Tensor, C: torch.Tensor,
           base: torch.Tensor, sigma: float = SIGMA,
           proxy_align: bool = False) -> dict[str, torch.Tensor]:
    """L_align = mean(1 - cos(f_i, v_i)) (+ mean(1 - cos(w_i, v_i)) with ``proxy_align``);
    L_u = mean ||w_i - c_bar||^2 (Eq. 6); L_c = mean_i log sum_j exp(f_i . w_j / sigma) over
    the proxies w_j of batch samples in another concept group than i (Eq. 7), f unit-norm.
    A sample's concept group is the candidate its base proxy weights most (argmax alpha)."""
    align = (1 - F.cosine_similarity(f, v, dim=-1)).mean()
    if proxy_align:
        align = align + (1 - F.cosine_similarity(w, v, dim=-1)).mean()
    u = ((w - C.mean(0, keepdim=True)) ** 2).sum(-1).mean()
    logits = F.normalize(f, dim=-1) @ w.T / sigma
    group = (base @ C.T).argmax(-1)
    same = group[:, None] == group[None, :]
    lse = torch.logsumexp(logits.masked_fill(same, float("-inf")), dim=1)
    has_neg = torch.isfinite(lse)
    c = lse[has_neg].mean() if bool(has_neg.any()) else logits.sum() * 0
    return {"align": align, "u": u, "c": c}


def refine_candidates(proxies: np.ndarray, C: np.ndarray, keep: int, k: int, seed: int = 0,
                      score: str = "mean") -> np.ndarray:
    """Dynamic candidate management: k-means of the proxies into M groups, score every
    candidate by its cosine to the M centroids — averaged (the paper) or, with
    ``score="max"``, its best one — and keep the ``keep`` best (indices, sorted)."""
    from .baselines import kmeans

    labels = kmeans(proxies, k, seed=seed, n_init=3)
    mu = np.stack([proxies[labels == j].mean(0) for j in range(k) if np.any(labels == j)])
    mu = mu / np.linalg.norm(mu, axis=1, keepdims=True).clip(min=1e-12)
    Cn = C / np.linalg.norm(C, axis=1, keepdims=True).clip(min=1e-12)
    sims = Cn @ mu.T
    scores = sims.max(1) if score == "max" else sims.mean(1)
    return np.sort(np.argsort(-scores, kind="stable")[:keep])
