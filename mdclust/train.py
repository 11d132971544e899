"""`mdclust train --method multidproxy`: learn interest-specific fused features.

Checkpoints go to ``<store>.checkpoints/`` every few epochs (model, optimiser, random states,
candidate set, curves), named by a hash of everything that defines the run, so rerunning the same
command after a crash or ``kill -9`` resumes from the last checkpoint and ends where an
uninterrupted run would.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from .candidates import load_candidates, validate_interest
from .checkpoint import Checkpoint
from .errors import MdclustError
from .features import load_image_features
from .progress import progress_bar
from .store import Store
from .textcache import text_features

TRAINED_METHODS = ("multidproxy", "pipcdr")
LOSS_TIE = 0.01  # restarts this close to the lowest final loss count as equally good


@dataclass
class TrainConfig:
    k: int
    epochs: int = 1000
    refine_every: int = 200
    lr: float = 1e-3
    weight_decay: float = 0.0
    layers: int = 1
    tau_alpha: float = 0.2
    sigma: float = 0.2
    batch: int = 256
    seed: int = 0
    object_word: str = "object"
    candidate_template: str = "{}"
    checkpoint_every: int = 50
    proxy_align: bool = False  # add 1 - cos(w_i, v_i) to L_align (not in the paper)
    candidate_score: str = "mean"  # refinement score: "mean" (paper) or "max" cosine
    detach_gate: bool = False  # L_align does not train the modality weight lambda
    restarts: int = 1  # seeds seed .. seed + restarts - 1, one kept (see _pick_restart)


@dataclass
class TrainResult:
    interest: str | None
    method: str
    k: int
    n: int
    epochs: int
    resumed_from: int = 0
    candidates_start: int = 0
    candidates: list[str] = field(default_factory=list)
    final_loss: float = 0.0
    seconds: float = 0.0
    seconds_per_epoch: float = 0.0
    grid: list[dict] = field(default_factory=list)
    restarts: list[dict] = field(default_factory=list)
    seed: int = 0
    features: str = "images"  # what was trained on (pipcdr: images or INTEREST:METHOD)
    augmentation: str = ""  # pipcdr: where the two views came from

    def to_json(self) -> dict:
        return asdict(self)


def group_path(interest: str | None, method: str) -> str:
    return f"interests/{interest}/train/{method}" if interest else f"train/{method}"


def prompt_for(interest: str, object_word: str) -> str:
    article = "An" if object_word[:1].lower() in "aeiou" else "A"
    return f"{article} {object_word} with {interest} of *"


def _validate(cfg: TrainConfig, n: int, n_candidates: int) -> None:
    if cfg.k < 2:
        raise MdclustError("--k must be at least 2")
    if cfg.k > n:
        raise MdclustError(f"--k {cfg.k} is more than the number of images ({n})")
    if cfg.k > n_candidates:
        raise MdclustError(f"--k {cfg.k} is more than the number of candidates "
                           f"({n_candidates}); ask for more with `mdclust candidates --k`")
    if min(cfg.epochs, cfg.refine_every, cfg.layers, cfg.restarts) < 1 or cfg.batch < 2:
        raise MdclustError("--epochs, --refine-every, --layers, --restarts must be >= 1 "
                           "and --batch >= 2")
    if cfg.candidate_score not in ("mean", "max"):
        raise MdclustError("--candidate-score must be mean or max")
    if cfg.lr <= 0 or cfg.weight_decay < 0 or cfg.tau_alpha <= 0 or cfg.sigma <= 0:
        raise MdclustError("--lr, --tau-alpha and --sigma must be > 0, --wd >= 0")


def train(store: Store, interest: str | None, *, method: str = "multidproxy", k: int | None = None,
          config: TrainConfig | None = None, device: str = "auto", model: str | None = None,
          grid: bool = False, grid_epochs: int | None = None,
          show_progress: bool = False, stop_after: int | None = None) -> TrainResult:
    """Train and store fused features. ``stop_after`` ends the run early after that many epochs
    of this call (leaving the checkpoint), which is how tests interrupt a run."""
    if method not in TRAINED_METHODS:
        raise MdclustError(f"unknown training method {method!r}: use {', '.join(TRAINED_METHODS)}")
    if method == "pipcdr":
        from .train_pipcdr import PipcdrConfig, train_pipcdr

        cfg = config or PipcdrConfig(k=0)
        cfg.k = k or cfg.k or None
        return train_pipcdr(store, interest, cfg, device=device, model=model,
                            show_progress=show_progress, stop_after=stop_after)
    t0 = time.perf_counter()
    interest = validate_interest(interest)
    store.validate()
    words = load_candidates(store, interest)
    feats = load_image_features(store, model)
    k = k or (config.k if config else None) or store.attrs(
        f"interests/{interest}/candidates").get("k")
    if not k:
        raise MdclustError("give --k, the number of clusters")
    cfg = config or TrainConfig(k=k)
    cfg.k = int(k)
    _validate(cfg, len(feats.paths), len(words))

    from .encoders import resolve_device

    dev = resolve_device(device)
    C_all = text_features(store, words, cfg.candidate_template, model=feats.key)
    prompt, star = text_features(store, [prompt_for(interest, cfg.object_word), "*"], "{}",
                                 model=feats.key)
    grid_rows: list[dict] = []
    if grid:
        cfg, grid_rows = _grid_search(store, feats, C_all, prompt, star, cfg, dev,
                                      grid_epochs or cfg.epochs, show_progress)
    def new_run(seed: int) -> _Run:  # loads the seed's checkpoint when there is one
        return _Run(store, interest, method, feats, words, C_all, prompt, star,
                    replace(cfg, seed=seed), dev)

    rows, checkpoints, resumed, seconds, epochs = [], [], {}, 0.0, 0
    for r in range(cfg.restarts):
        run = new_run(cfg.seed + r)
        checkpoints.append(run.checkpoint)
        out = run.fit(show_progress, stop_after)
        if out is None:  # stopped early on purpose: the checkpoint holds the state
            return TrainResult(interest, method, cfg.k, len(feats.paths), cfg.epochs,
                               resumed_from=run.resumed_from, candidates_start=len(words),
                               seconds=round(time.perf_counter() - t0, 3))
        resumed[run.cfg.seed] = run.resumed_from
        seconds, epochs = seconds + run.train_seconds, epochs + run.epochs_this_call
        if cfg.restarts > 1:
            # keep every finished restart on disk, not in memory, until one is chosen
            run.checkpoint.save(run._state())
            rows.append({"seed": run.cfg.seed, "final_loss": round(run.curves["loss"][-1], 6),
                         "silhouette": round(_silhouette(out[0], cfg.k, cfg.seed), 6)})
    chosen = _pick_restart(rows)["seed"] if rows else run.cfg.seed
    if chosen != run.cfg.seed:
        run = new_run(chosen)
        out = run.fit(False, None)  # from its final checkpoint: no training
    result = TrainResult(interest, method, cfg.k, len(feats.paths), cfg.epochs,
                         resumed_from=resumed[run.cfg.seed], candidates_start=len(words),
                         candidates=[words[i] for i in run.active], grid=grid_rows,
                         restarts=rows, seed=run.cfg.seed)
    fused, proxies = out
    curves = {name: np.array(vals, dtype=np.float64) for name, vals in run.curves.items()}
    hist_round = [r for r, kept in enumerate(run.history, start=1) for _ in kept]
    hist_word = [words[i] for kept in run.history for i in kept]
    params = {**asdict(cfg), "chosen_seed": run.cfg.seed, "model_key": feats.key, "device": dev,
              "prompt": prompt_for(interest, cfg.object_word), "grid": bool(grid)}
    with store.transaction() as txn:
        txn.put_group(group_path(interest, method), {
            "path": feats.paths, "fused": fused.astype(np.float32),
            "proxies": proxies.astype(np.float32),
            "candidates": result.candidates,
            "history_round": np.array(hist_round, dtype=np.int32), "history_word": hist_word,
            **{f"curve_{name}": v for name, v in curves.items()},
        }, {"method": method, "params": params, "candidates_start": len(words),
            "grid": grid_rows, "restarts": rows, "resumed_from": result.resumed_from})
    for checkpoint in checkpoints:
        checkpoint.remove()
    result.final_loss = float(curves["loss"][-1])
    result.seconds = round(time.perf_counter() - t0, 3)
    result.seconds_per_epoch = round(seconds / max(1, epochs), 4)
    return result


class _Run:
    """One training run with checkpointing; kept apart from the storage code above."""

    def __init__(self, store, interest, method, feats, words, C_all, prompt, star, cfg, dev):
        import torch

        from .methods import multidproxy as mdp

        self.torch, self.mdp, self.cfg, self.dev = torch, mdp, cfg, dev
        self.words, self.C_all = words, np.asarray(C_all, dtype=np.float32)
        self.v = torch.from_numpy(feats.vectors).to(dev)
        self.t = torch.from_numpy(np.asarray(prompt, dtype=np.float32)).to(dev)
        torch.manual_seed(cfg.seed)
        self.model = mdp.MultiDProxy(len(feats.paths), feats.vectors.shape[1], star,
                                     cfg.layers, cfg.tau_alpha).to(dev)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, betas=(0.9, 0.999),
                                    weight_decay=cfg.weight_decay)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.active = np.arange(len(words))
        self.sizes = mdp.refinement_sizes(len(words), cfg.k, cfg.epochs // cfg.refine_every)
        self.history: list[list[int]] = []
        self.curves: dict[str, list[float]] = {n: [] for n in
                                               ("loss", "align", "u", "c", "alpha", "beta",
                                                "lambda", "candidates")}
        self.epoch = self.resumed_from = self.epochs_this_call = 0
        self.train_seconds = 0.0
        self.checkpoint = Checkpoint(store, method, {
            "interest": interest, "method": method, "cfg": asdict(cfg), "key": feats.key,
            "paths": feats.paths, "words": words})
        self._load()

    def _state(self) -> dict:
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict(),
                "gen": self.gen.get_state(), "torch_rng": self.torch.get_rng_state(),
                "active": self.active, "history": self.history, "curves": self.curves,
                "epoch": self.epoch}

    def _load(self) -> None:
        s = self.checkpoint.load(self.dev)
        if s is None:
            return
        self.model.load_state_dict(s["model"])
        self.opt.load_state_dict(s["opt"])
        self.gen.set_state(s["gen"])
        self.torch.set_rng_state(s["torch_rng"])
        self.active, self.history, self.curves = s["active"], s["history"], s["curves"]
        self.epoch = self.resumed_from = int(s["epoch"])

    def _C(self):
        return self.torch.from_numpy(self.C_all[self.active]).to(self.dev)

    def all_proxies(self) -> np.ndarray:
        torch = self.torch
        with torch.no_grad():
            idx = torch.arange(len(self.v), device=self.dev)
            return self.model.proxies(idx, self._C()).cpu().numpy()

    def fused(self) -> np.ndarray:
        torch = self.torch
        self.model.eval()
        with torch.no_grad():
            idx = torch.arange(len(self.v), device=self.dev)
            f, _ = self.model.forward_full(self.v, self.t, self.model.proxies(idx, self._C()))
        self.model.train()
        return f.cpu().numpy()

    def fit(self, show_progress: bool, stop_after: int | None):
        torch, mdp, cfg = self.torch, self.mdp, self.cfg
        n = len(self.v)
        with progress_bar(show_progress, unit="epochs") as bar:
            task = bar.add_task("multidproxy", total=cfg.epochs, completed=self.epoch)
            while self.epoch < cfg.epochs:
                if stop_after is not None and self.epochs_this_call >= stop_after:
                    return None
                t0 = time.perf_counter()
                e = self.epoch
                a, b = mdp.alpha_schedule(e, cfg.epochs), mdp.beta_schedule(e, cfg.epochs)
                C = self._C()
                perm = torch.randperm(n, generator=self.gen).to(self.dev)
                sums = {"loss": 0.0, "align": 0.0, "u": 0.0, "c": 0.0, "lambda": 0.0}
                for i in range(0, n, cfg.batch):
                    idx = perm[i:i + cfg.batch]
                    w = self.model.proxies(idx, C)
                    f, lam = self.model(self.v[idx], self.t, w, detach_gate=cfg.detach_gate)
                    parts = mdp.losses(f, self.v[idx], w, C, self.model.base_proxies[idx],
                                       cfg.sigma, cfg.proxy_align)

                    loss = parts["align"] + a * parts["u"] + b * parts["c"]
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
                self.epochs_this_call += 1
                if self.epoch % cfg.refine_every == 0 and len(self.history) < len(self.sizes):
                    keep = mdp.refine_candidates(self.all_proxies(), self.C_all[self.active],
                                                 self.sizes[len(self.history)], cfg.k,
                                                 seed=cfg.seed + self.epoch,
                                                 score=cfg.candidate_score)
                    self.active = self.active[keep]
                    self.history.append(self.active.tolist())
                self.train_seconds += time.perf_counter() - t0
                if self.epoch % cfg.checkpoint_every == 0 and self.epoch < cfg.epochs:
                    self.checkpoint.save(self._state())
                bar.update(task, completed=self.epoch, description=(
                    f"multidproxy loss {sums['loss']:.4f} align {sums['align']:.3f} "
                    f"u {sums['u']:.3f} c {sums['c']:.3f} |C| {len(self.active)}"))
        return self.fused(), self.all_proxies()


def _pick_restart(rows: list[dict]) -> dict:
    """Among restarts ({seed, final_loss, silhouette}): those whose final loss is within
    LOSS_TIE (relative) of the lowest are equally good optima of the objective; of these, the
    one whose fused features separate best into k groups (silhouette) is kept."""
    lowest = min(r["final_loss"] for r in rows)
    tied = [r for r in rows if r["final_loss"] <= lowest + LOSS_TIE * abs(lowest)]
    return max(tied, key=lambda r: r["silhouette"])


def _grid_search(store, feats, C_all, prompt, star, cfg, dev, epochs, show_progress):
    """The paper's lr x weight-decay grid, chosen WITHOUT labels: the silhouette (cosine) of
    k-means on the fused features, a label-free measure of how well they separate into k."""
    from .methods import multidproxy as mdp

    rows, best = [], None
    for lr in mdp.LR_GRID:
        for wd in mdp.WD_GRID:
            trial = replace(cfg, lr=lr, weight_decay=wd, epochs=epochs,
                            refine_every=max(1, cfg.refine_every * epochs // cfg.epochs),
                            checkpoint_every=10 ** 9)
            run = _Run(store, "grid", "multidproxy", feats, list(range(len(C_all))), C_all,
                       prompt, star, trial, dev)
            fused, _ = run.fit(False, None)
            score = _silhouette(fused, cfg.k, cfg.seed)
            rows.append({"lr": lr, "weight_decay": wd, "silhouette": round(score, 6)})
            if best is None or score > best[0]:
                best = (score, lr, wd)
    return replace(cfg, lr=best[1], weight_decay=best[2]), rows


# Silhouette costs O(n^2) (measured on one core at 512-d: 3.4 s for 10k images, 31 s for 40k);
# above this many images it is scored on a seeded random sample of this size (1.0 s at 100k),
# so restarts and grid points stay cheap. Smaller collections are scored exactly.
SILHOUETTE_SAMPLE = 10_000


def _silhouette(fused: np.ndarray, k: int, seed: int) -> float:
    """Cosine silhouette of k-means on the fused features: how well they separate into k
    groups, measured without labels (selects grid points and restarts)."""
    from sklearn.metrics import silhouette_score

    from .methods.baselines import kmeans

    labels = kmeans(fused, k, seed=seed)
    if len(set(labels)) < 2:
        return -1.0
    sample = SILHOUETTE_SAMPLE if len(fused) > SILHOUETTE_SAMPLE else None
    return float(silhouette_score(fused, labels, metric="cosine", sample_size=sample,
                                  random_state=seed))


def trained_features(store: Store, interest: str | None,
                     method: str) -> tuple[list[str], np.ndarray]:
    g = store.read_group(group_path(interest, method))
    if g is None:
        where = f" for {interest!r}" if interest else ""
        flag = f" --interest {interest}" if interest else ""
        raise MdclustError(f"no trained {method}{where}; run `mdclust train{flag} "
                           f"--method {method}` first")
    return list(g["path"]), np.asarray(g["fused" if "fused" in g.data else "features"],
                                       dtype=np.float32)

