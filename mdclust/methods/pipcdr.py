"""PIPCDR (shared/papers/002): positive instance propagation + cluster dispersion regularisation,
BYOL-style, as a head trained on frozen features. docs/methods/pipcdr.md lists the choices the
paper summary leaves open (it gives no equations).

Online network = encoder + projector + predictor; target network = EMA of encoder + projector.
Each step (the second M-step): two views of a batch; PIP samples a positive around the online
projection in latent space, z + sigma * eps, and aligns the predictions of z and of that
positive with the other view's target (both directions); CDR takes the k-means pseudo-labels
and pulls each online projection towards its cluster's target prototype (compactness) while a
prototype-level contrastive term pushes the prototypes apart on the hypersphere (dispersion),
prototypes built from the batch plus a memory queue of target projections. Every
``kmeans_every`` epochs (the first M-step) the pseudo-labels are refreshed by spherical k-means
of the target encoder's features.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from mdclust.methods.pipcdr_config import (  # noqa: F401  (pc.EPOCHS etc.)
    BATCH,
    EMA,
    EPOCHS,
    HIDDEN,
    KMEANS_EVERY,
    LR,
    OUT,
    QUEUE,
    SIGMA,
    TAU,
    W_PIP,
    WEIGHT_DECAY,
)


def mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                         nn.Linear(hidden, d_out))


class PIPCDR(nn.Module):
    def __init__(self, d_in: int, hidden: int = HIDDEN, out: int = OUT):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(d_in, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                                     nn.Linear(hidden, hidden))
        self.projector = mlp(hidden, hidden, out)
        self.predictor = mlp(out, hidden, out)
        self.target_encoder = copy.deepcopy(self.encoder)
        self.target_projector = copy.deepcopy(self.projector)
        for p in list(self.target_encoder.parameters()) + list(self.target_projector.parameters()):
            p.requires_grad_(False)

    @torch.no_grad()
    def ema_update(self, m: float) -> None:
        """target = m * target + (1 - m) * online, parameters and BatchNorm buffers."""
        for online, target in ((self.encoder, self.target_encoder),
                               (self.projector, self.target_projector)):
            for po, pt in zip(online.parameters(), target.parameters()):
                pt.mul_(m).add_(po.detach(), alpha=1 - m)
            for bo, bt in zip(online.buffers(), target.buffers()):
                bt.copy_(bo)

    def online(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.encoder(x))

    @torch.no_grad()
    def target(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.target_projector(self.target_encoder(x)), dim=-1)

    @torch.no_grad()
    def embed(self, x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
        """Features used for clustering: the target encoder's output, unit norm."""
        was = self.training
        self.eval()
        out = torch.cat([F.normalize(self.target_encoder(x[i:i + chunk]), dim=-1)
                         for i in range(0, len(x), chunk)])
        self.train(was)
        return out


def pip_loss(model: PIPCDR, z_online: torch.Tensor, t_other: torch.Tensor, sigma: float,
             gen: torch.Generator | None = None) -> torch.Tensor:
    """Positive instance propagation: a positive is sampled around the online projection,
    z' = z + sigma * eps, and the predictor maps both z and z' onto the other view's target
    (the paper: "both the original view and its neighbor"); loss 2 - 2 cos, averaged."""
    z = F.normalize(z_online, dim=-1)
    eps = torch.randn(z.shape, generator=gen, device=z.device)
    p = F.normalize(model.predictor(torch.cat([z, z + sigma * eps])), dim=-1)
    return (2 - 2 * (p * torch.cat([t_other, t_other])).sum(-1)).mean()


def cdr_loss(z_online: torch.Tensor, labels: torch.Tensor, t_bank: torch.Tensor,
             bank_labels: torch.Tensor, k: int, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(dispersion, compactness). Prototypes mu_c: normalised means of the online projections
    (batch) and of the target projections (batch + queue) of cluster c. Dispersion: cross-entropy
    of each online prototype against all target prototypes (temperature tau), i.e. prototypes
    of different clusters pushed apart; compactness: mean 1 - cos(z_i, target mu_{y_i})."""
    z = F.normalize(z_online, dim=-1)
    present = torch.unique(labels)
    onehot = F.one_hot(labels, k).float()[:, present]
    mu_on = F.normalize(onehot.T @ z, dim=-1)
    bank_onehot = F.one_hot(bank_labels, k).float()[:, present]
    mu_tg = F.normalize(bank_onehot.T @ t_bank, dim=-1)
    if len(present) > 1:
        logits = mu_on @ mu_tg.T / tau
        dispersion = F.cross_entropy(logits, torch.arange(len(present), device=z.device))
    else:
        dispersion = z.sum() * 0
    position = torch.searchsorted(present, labels)
    compact = (1 - (z * mu_tg[position]).sum(-1)).mean()
    return dispersion, compact


def match_labels(new: np.ndarray, old: np.ndarray, k: int) -> np.ndarray:
    """Rename the clusters of ``new`` to the ``old`` ids they overlap most (Hungarian), so a
    refresh keeps cluster identities and the memory queue's labels stay meaningful."""
    from scipy.optimize import linear_sum_assignment

    overlap = np.zeros((k, k), dtype=np.int64)
    np.add.at(overlap, (new, old), 1)
    rows, cols = linear_sum_assignment(-overlap)
    mapping = np.empty(k, dtype=np.int64)
    mapping[rows] = cols
    return mapping[new]


def feature_views(x: torch.Tensor, gen: torch.Generator, noise: float = 0.05,
                  drop: float = 0.1) -> torch.Tensor:
    """Feature-space augmentation when no image views are stored: dropout-style masking and
    Gaussian noise, then back to the unit sphere."""
    keep = (torch.rand(x.shape, generator=gen, device=x.device) >= drop).float() / (1 - drop)
    return F.normalize(x * keep + noise * torch.randn(x.shape, generator=gen, device=x.device),
                       dim=-1)


class Trainer:
    """The MM loop with resumable state. ``X`` (n, d) unit features; ``views`` optional
    (n, V, d) stored augmented views; two different views are drawn per sample and step."""

    def __init__(self, X: np.ndarray, k: int, views: np.ndarray | None = None, *,
                 epochs: int = EPOCHS, batch: int = BATCH, lr: float = LR,
                 weight_decay: float = WEIGHT_DECAY, ema: float = EMA, sigma: float = SIGMA,
                 w_pip: float = W_PIP, tau: float = TAU, kmeans_every: int = KMEANS_EVERY,
                 queue: int = QUEUE, hidden: int = HIDDEN, out: int = OUT, seed: int = 0,
                 device: str = "cpu"):
        torch.manual_seed(seed)
        self.dev = device
        self.X = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)).to(device)
        self.views = None if views is None else torch.from_numpy(
            np.ascontiguousarray(views, dtype=np.float32)).to(device)
        self.k, self.epochs, self.batch, self.ema = k, epochs, batch, ema
        self.sigma, self.w_pip, self.tau, self.kmeans_every = sigma, w_pip, tau, kmeans_every
        self.queue_size, self.seed = min(queue, len(X)), seed
        self.model = PIPCDR(X.shape[1], hidden, out).to(device)
        self.opt = torch.optim.Adam([p for p in self.model.parameters() if p.requires_grad],
                                    lr=lr, weight_decay=weight_decay)
        self.gen = torch.Generator(device=device).manual_seed(seed)
        self.epoch = 0
        self.labels = torch.zeros(len(X), dtype=torch.long, device=device)
        self.bank = torch.zeros(0, out, device=device)
        self.bank_idx = torch.zeros(0, dtype=torch.long, device=device)  # rows of the queue
        self.curves: dict[str, list[float]] = {"loss": [], "pip": [], "dispersion": [],
                                               "compact": [], "relabelled": []}

    def state(self) -> dict:
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict(),
                "gen": self.gen.get_state(), "epoch": self.epoch, "labels": self.labels,
                "bank": self.bank, "bank_idx": self.bank_idx, "curves": self.curves,
                "torch_rng": torch.get_rng_state()}

    def load(self, s: dict) -> None:
        self.model.load_state_dict(s["model"])
        self.opt.load_state_dict(s["opt"])
        self.gen.set_state(s["gen"])
        torch.set_rng_state(s["torch_rng"])
        self.epoch, self.labels, self.curves = s["epoch"], s["labels"], s["curves"]
        self.bank, self.bank_idx = s["bank"], s["bank_idx"]

    def refresh_labels(self) -> float:
        """First M-step: spherical k-means of the target features; returns the changed share."""
        from mdclust.methods.baselines import spherical_kmeans

        emb = self.model.embed(self.X).cpu().numpy()
        new = spherical_kmeans(emb, self.k, seed=self.seed + self.epoch, n_init=3)
        if not self.epoch:
            self.labels = torch.from_numpy(new).to(self.dev)
            return 1.0
        new = torch.from_numpy(match_labels(new, self.labels.cpu().numpy(), self.k)).to(self.dev)
        changed = float((new != self.labels).float().mean())
        self.labels = new
        return changed

    def _two_views(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.views is None:
            x = self.X[idx]
            return feature_views(x, self.gen), feature_views(x, self.gen)
        nv = self.views.shape[1]
        a = torch.randint(0, nv, (len(idx),), generator=self.gen, device=self.dev)
        b = (a + torch.randint(1, nv, (len(idx),), generator=self.gen, device=self.dev)) % nv \
            if nv > 1 else a
        return self.views[idx, a], self.views[idx, b]

    def epoch_step(self) -> dict[str, float]:
        relabelled = self.refresh_labels() if self.epoch % self.kmeans_every == 0 else 0.0
        n = len(self.X)
        perm = torch.randperm(n, generator=self.gen, device=self.dev)
        sums = {"loss": 0.0, "pip": 0.0, "dispersion": 0.0, "compact": 0.0}
        for i in range(0, n - 1, self.batch):
            idx = perm[i:i + self.batch]
            if len(idx) < 2:
                continue
            x1, x2 = self._two_views(idx)
            z1, z2 = self.model.online(x1), self.model.online(x2)
            t1, t2 = self.model.target(x1), self.model.target(x2)
            pip = 0.5 * (pip_loss(self.model, z1, t2, self.sigma, self.gen)
                         + pip_loss(self.model, z2, t1, self.sigma, self.gen))
            y = self.labels[idx]
            bank = torch.cat([t1, self.bank])[: self.queue_size]
            bank_idx = torch.cat([idx, self.bank_idx])[: self.queue_size]
            disp, comp = cdr_loss(torch.cat([z1, z2]), torch.cat([y, y]), bank,
                                  self.labels[bank_idx], self.k, self.tau)
            loss = self.w_pip * pip + (1 - self.w_pip) * (disp + comp)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.model.ema_update(self.ema)
            self.bank, self.bank_idx = bank.detach(), bank_idx
            m = len(idx) / n
            for key, val in (("loss", loss), ("pip", pip), ("dispersion", disp),
                             ("compact", comp)):
                sums[key] += float(val.detach()) * m
        for key, val in sums.items():
            self.curves[key].append(val)
        self.curves["relabelled"].append(relabelled)
        self.epoch += 1
        return sums

    def features(self) -> np.ndarray:
        return self.model.embed(self.X).cpu().numpy()


def fit(X: np.ndarray, k: int, views: np.ndarray | None = None, **kw) -> np.ndarray:
    """Train from scratch and return the learned unit features (the scikit-learn-like entry)."""
    tr = Trainer(X, k, views, **kw)
    while tr.epoch < tr.epochs:
        tr.epoch_step()
    return tr.features()
