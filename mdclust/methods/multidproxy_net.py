"""Multi-DProxy's network, losses and training loop on arrays (no store).

Notation follows shared/papers/001: v_i image features, t the prompt feature, w'_i base proxies,
c_k candidate embeddings, w_i = sum_k alpha_ik c_k proxies, F fused features.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from mdclust.methods.multidproxy import (
    LAYERS,
    SIGMA,
    TAU_ALPHA,
    TAU_INIT,
    MultiDProxyConfig,
    alpha_schedule,
    beta_schedule,
    reference_index,
    refine_candidates,
    refinement_epochs,
    refinement_sizes,
)


def _heads(d: int) -> int:
    return next(h for h in (8, 4, 2, 1) if d % h == 0 and d // h >= 8) if d >= 8 else 1


class GatedFusionLayer(nn.Module):
    """Eq. (1)-(3) on the set of samples: V = {v_i} and T = {t*_i} are sequences (one token per
    image), so every image attends over the text tokens of the set and every text token over
    the images; sigmoid-gated residuals on [X; X_attn]; then LayerNorm(X + FFN(X))."""

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
    """Text token t*_i from the prompt feature t and the proxy w_i (``text_side``); L fusion
    layers over the set; lambda = sigmoid(mean_i cos(T^L_i, V^L_i) / tau), one weight for the
    set, tau learnable (init 0.1); F = lambda T^L + (1 - lambda) V^L (Eq. 4).

    ``text_side``: "identity" projects [t; w_i] with Linear(2d -> d) initialised to [0 | I],
    so t*_i = w_i at the start and the proxies keep their CLIP geometry (t is the same for every
    image, so it can only act as a learned bias); "proxy" uses t*_i = w_i; "linear" is a
    default-initialised Linear(2d -> d), which scrambles the shared space at the start.
    ``text_encoder`` (optional) maps proxies to text tokens instead (the Multi-MaP reading:
    the proxy fills the prompt's "*" slot and goes through the frozen text encoder)."""

    def __init__(self, n_images: int, d: int, base_proxy: np.ndarray, layers: int = LAYERS,
                 tau_alpha: float = TAU_ALPHA, tau_init: float = TAU_INIT,
                 text_side: str = "identity", fuse: str = "layernorm",
                 text_encoder: Callable | None = None):
        super().__init__()
        base = torch.as_tensor(np.asarray(base_proxy), dtype=torch.float32).reshape(1, -1)
        self.base_proxies = nn.Parameter(base.repeat(n_images, 1))  # w'_i = f_t("*")
        self.text_side, self.fuse_on, self.text_encoder = text_side, fuse, text_encoder
        self.text_in = nn.Linear(2 * d, d) if text_side in ("identity", "linear") else None
        if text_side == "identity":
            with torch.no_grad():
                self.text_in.weight.zero_()
                self.text_in.weight[:, d:] = torch.eye(d)
                self.text_in.bias.zero_()
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

    def text_tokens(self, t: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """t*_i for proxies w (n, d)."""
        if self.text_encoder is not None:
            return self.text_encoder(w)
        if self.text_in is None:
            return w
        return self.text_in(torch.cat([t.reshape(1, -1).expand(len(w), -1), w], dim=-1))

    def _lambda(self, V_L: torch.Tensor, T_L: torch.Tensor) -> torch.Tensor:
        # <T^L, V^L> is the inner product of the two sets (matrices) of unit rows ("temperature-
        # scaled cosine similarity"), divided by the set size so it does not grow with it.
        agree = (F.normalize(T_L, dim=-1) * F.normalize(V_L, dim=-1)).sum(-1).mean()
        return torch.sigmoid(agree / self.tau)

    def _mix(self, V_L, T_L, lam):
        if self.fuse_on == "unit":
            V_L, T_L = F.normalize(V_L, dim=-1), F.normalize(T_L, dim=-1)
        return lam * T_L + (1 - lam) * V_L

    def forward(self, v: torch.Tensor, t: torch.Tensor, w: torch.Tensor,
                detach_gate: bool = False, tokens: torch.Tensor | None = None):
        """Training pass: the batch is the set attended over. Returns F and lambda (n, 1).
        ``tokens``: t*_i already computed by ``text_tokens(t, w)`` (the caller needs them too)."""
        V, T = v, self.text_tokens(t, w) if tokens is None else tokens
        for layer in self.layers:
            V, T = layer(V, T)
        lam = self._lambda(V, T)
        if detach_gate:  # lambda measures agreement; the losses do not steer it
            lam = lam.detach()
        return self._mix(V, T, lam), lam.expand(len(v), 1)

    @torch.no_grad()
    def reference_states(self, v_ref: torch.Tensor, t: torch.Tensor, w_ref: torch.Tensor):
        """The reference set through every layer, attending over itself: the keys of layer l
        for any query are the reference set's layer l-1 outputs. Also returns lambda of the
        reference set, which stands for the collection's."""
        V, T = v_ref, self.text_tokens(t, w_ref)
        states = [(V, T)]
        for layer in self.layers:
            V, T = layer(V, T)
            states.append((V, T))
        return states, self._lambda(V, T)

    @torch.no_grad()
    def features(self, v: torch.Tensor, t: torch.Tensor, w: torch.Tensor, states,
                 lam: torch.Tensor) -> torch.Tensor:
        """Fused features of a chunk of images, attending over the reference states: the cost
        is linear in the number of images; with every image in the reference set it is the
        full-set attention exactly."""
        V, T = v, self.text_tokens(t, w)
        for layer, (V_keys, T_keys) in zip(self.layers, states):
            V, T = layer(V, T, V_keys, T_keys)
        return self._mix(V, T, lam)


def losses(f: torch.Tensor, v: torch.Tensor, w: torch.Tensor, C: torch.Tensor,
           base: torch.Tensor, sigma: float = SIGMA, proxy_align: bool = False,
           negatives: str = "batch", targets: torch.Tensor | None = None
           ) -> dict[str, torch.Tensor]:
    """L_align = mean(1 - cos(f_i, v_i)) (+ mean(1 - cos(w_i, v_i)) with ``proxy_align``);
    L_u = mean ||w_i - c_bar||^2 (Eq. 6); L_c = mean_i log sum_{j != i} exp(f_i . w_j / sigma)
    over the batch (Eq. 7), f_i unit-norm (sigma is a temperature on the cosine scale).
    ``negatives="groups"`` keeps only j in another concept group (argmax alpha), the reading of
    the paper's prose that 0.1 used. ``targets`` (text-encoder proxies, in the image space)
    replace w in L_c and in the proxy alignment."""
    align = (1 - F.cosine_similarity(f, v, dim=-1)).mean()
    if proxy_align:
        proxy = w if targets is None else targets
        align = align + (1 - F.cosine_similarity(proxy, v, dim=-1)).mean()
    u = ((w - C.mean(0, keepdim=True)) ** 2).sum(-1).mean()
    tw = w if targets is None else F.normalize(targets, dim=-1)
    logits = F.normalize(f, dim=-1) @ tw.T / sigma
    if negatives == "groups":
        group = (base @ C.T).argmax(-1)
        excluded = group[:, None] == group[None, :]
    else:
        excluded = torch.eye(len(f), dtype=torch.bool, device=f.device)
    if negatives == "infonce":  # the sample's own proxy as the positive, all of the batch below
        c = (torch.logsumexp(logits, dim=1) - logits.diagonal()).mean()
        return {"align": align, "u": u, "c": c}
    lse = torch.logsumexp(logits.masked_fill(excluded, float("-inf")), dim=1)
    has_neg = torch.isfinite(lse)
    c = lse[has_neg].mean() if bool(has_neg.any()) else logits.sum() * 0
    return {"align": align, "u": u, "c": c}


@torch.no_grad()
def fused_features(model: MultiDProxy, v, t: torch.Tensor, C: torch.Tensor, ref: np.ndarray,
                   chunk: int = 4096, out=None) -> np.ndarray:
    """F for every row of ``v`` (a tensor or any array, float16 on disk included), chunk by
    chunk against the reference set ``ref``: time and memory linear in N, one float32 output,
    or written chunk by chunk into ``out`` (an array, or a core.rowfile.RowFile on disk)."""
    was_training = model.training
    model.eval()
    dev = t.device

    def rows(i, j):
        x = v[i:j] if isinstance(v, torch.Tensor) else torch.from_numpy(
            np.asarray(v[i:j], dtype=np.float32))
        return x.to(dev, torch.float32)

    ref_t = torch.from_numpy(np.asarray(ref)).to(dev)
    v_ref = v[ref_t] if isinstance(v, torch.Tensor) else torch.from_numpy(
        np.asarray(v[np.asarray(ref)], dtype=np.float32)).to(dev)
    states, lam = model.reference_states(v_ref.float(), t, model.proxies(ref_t, C))
    out = np.empty((len(v), v.shape[1]), dtype=np.float32) if out is None else out
    for i in range(0, len(v), chunk):
        j = min(i + chunk, len(v))
        idx = torch.arange(i, j, device=dev)
        out[i:j] = model.features(rows(i, j), t, model.proxies(idx, C), states, lam).cpu().numpy()
    model.train(was_training)
    return out


class Fit:
    """One training run on arrays: image features ``v`` (N, d), candidate features ``C_all``,
    prompt feature ``t`` and the "*" feature ``star``. ``state()``/``load()`` give everything
    needed to resume exactly (model, optimiser, random states, candidates, curves)."""

    CURVES = ("loss", "align", "u", "c", "alpha", "beta", "lambda", "candidates")

    def __init__(self, v: np.ndarray, C_all: np.ndarray, t: np.ndarray, star: np.ndarray,
                 cfg: MultiDProxyConfig, device: str = "cpu",
                 text_encoder: Callable | None = None):
        self.cfg, self.dev = cfg, device
        self.C_all = np.asarray(C_all, dtype=np.float32)
        self.v = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)).to(device)
        self.t = torch.from_numpy(np.asarray(t, dtype=np.float32).reshape(-1)).to(device)
        torch.manual_seed(cfg.seed)
        self.model = MultiDProxy(len(self.v), self.v.shape[1], star, cfg.layers, cfg.tau_alpha,
                                 text_side=cfg.text_side, fuse=cfg.fuse,
                                 text_encoder=text_encoder).to(device)
        if cfg.proxy_init == "image":
            with torch.no_grad():
                self.model.base_proxies.copy_(self.v)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.Adam(params, lr=cfg.lr, betas=(0.9, 0.999),
                                    weight_decay=cfg.weight_decay)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.active = np.arange(len(self.C_all))
        self.refine_at = refinement_epochs(cfg.epochs, cfg.refine_every, cfg.refine_timing)
        self.sizes = refinement_sizes(len(self.C_all), cfg.k, len(self.refine_at))
        self.history: list[list[int]] = []
        self.curves: dict[str, list[float]] = {n: [] for n in self.CURVES}
        self.epoch = 0

    def state(self) -> dict:
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict(),
                "gen": self.gen.get_state(), "torch_rng": torch.get_rng_state(),
                "active": self.active, "history": self.history, "curves": self.curves,
                "epoch": self.epoch}

    def load(self, s: dict) -> None:
        self.model.load_state_dict(s["model"])
        self.opt.load_state_dict(s["opt"])
        self.gen.set_state(s["gen"])
        torch.set_rng_state(s["torch_rng"])
        self.active, self.history, self.curves = s["active"], s["history"], s["curves"]
        self.epoch = int(s["epoch"])

    def _C(self) -> torch.Tensor:
        return torch.from_numpy(self.C_all[self.active]).to(self.dev)

    def all_proxies(self, out=None) -> np.ndarray:
        """Every image's proxy; into ``out`` (an array or a RowFile) 4,096 rows at a time."""
        with torch.no_grad():
            if out is None:
                idx = torch.arange(len(self.v), device=self.dev)
                return self.model.proxies(idx, self._C()).cpu().numpy()
            C = self._C()
            for i in range(0, len(self.v), 4096):
                idx = torch.arange(i, min(i + 4096, len(self.v)), device=self.dev)
                out[i:i + len(idx)] = self.model.proxies(idx, C).cpu().numpy()
            return out

    def fused(self, out=None) -> np.ndarray:
        """F for every image, attending over the reference set (linear in N); into ``out``
        when given."""
        ref = reference_index(len(self.v), self.cfg.reference, self.cfg.seed)
        return fused_features(self.model, self.v, self.t, self._C(), ref, out=out)

    def epoch_step(self) -> dict[str, float]:
        """One epoch over shuffled mini-batches, then the candidate refinement when due."""
        cfg, model, n = self.cfg, self.model, len(self.v)
        e = self.epoch
        a, b = alpha_schedule(e, cfg.epochs), beta_schedule(e, cfg.epochs)
        C = self._C()
        perm = torch.randperm(n, generator=self.gen).to(self.dev)
        sums = {"loss": 0.0, "align": 0.0, "u": 0.0, "c": 0.0, "lambda": 0.0}
        for i in range(0, n, cfg.batch):
            idx = perm[i:i + cfg.batch]
            w = model.proxies(idx, C)
            tokens = model.text_tokens(self.t, w)  # once: the text encoder is the costly part
            f, lam = model(self.v[idx], self.t, w, detach_gate=cfg.detach_gate, tokens=tokens)
            targets = tokens if model.text_encoder is not None else None
            parts = losses(f, self.v[idx], w, C, model.base_proxies[idx], cfg.sigma,
                           cfg.proxy_align, cfg.negatives, targets)
            loss = parts["align"] + cfg.u_weight * a * parts["u"] + b * parts["c"]
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            m = len(idx) / n
            sums["loss"] += loss.item() * m
            sums["lambda"] += lam.mean().item() * m
            for key in ("align", "u", "c"):
                sums[key] += parts[key].item() * m
        for key, val in sums.items():
            self.curves[key].append(val)
        self.curves["alpha"].append(a)
        self.curves["beta"].append(b)
        self.curves["candidates"].append(float(len(self.active)))
        self.epoch += 1
        r = len(self.history)
        if r < len(self.refine_at) and self.epoch >= self.refine_at[r]:
            keep = refine_candidates(self.all_proxies(), self.C_all[self.active], self.sizes[r],
                                     cfg.k, seed=cfg.seed + self.epoch,
                                     score=cfg.candidate_score)
            self.active = self.active[keep]
            self.history.append(self.active.tolist())
        return sums

    def run(self, on_epoch: Callable[[dict], None] | None = None,
            stop_after: int | None = None) -> bool:
        """Train to E epochs (False when ``stop_after`` epochs of this call ended it first)."""
        done = 0
        while self.epoch < self.cfg.epochs:
            if stop_after is not None and done >= stop_after:
                return False
            t0 = time.perf_counter()
            sums = self.epoch_step()
            done += 1
            if on_epoch is not None:
                on_epoch({**sums, "seconds": time.perf_counter() - t0})
        return True


def fit(v: np.ndarray, C_all: np.ndarray, t: np.ndarray, star: np.ndarray,
        cfg: MultiDProxyConfig, device: str = "cpu") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train from scratch on arrays (no store, no checkpoints): returns the fused features F
    (N, d), the proxies (N, d) and the indices of the candidates kept at the end."""
    run = Fit(v, C_all, t, star, cfg, device)
    run.run()
    return run.fused(), run.all_proxies(), run.active
