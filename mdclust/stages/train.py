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

from mdclust.core import layout
from mdclust.core.checkpoint import Checkpoint
from mdclust.core.errors import MdclustError
from mdclust.core.features import load_image_features
from mdclust.core.progress import progress_bar
from mdclust.core.store import Store, StoreLike, as_store
from mdclust.core.textcache import text_features
from mdclust.methods import multidproxy as mdp
from mdclust.methods.multidproxy import MultiDProxyConfig
from mdclust.stages.candidates import load_candidates, validate_interest

TRAINED_METHODS = ("multidproxy", "pipcdr")
LOSS_TIE = 0.01  # restarts this close to the lowest final loss count as equally good


TrainConfig = MultiDProxyConfig  # the name the CLI and 0.1 scripts use


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
    for name, value, allowed in (("candidate-score", cfg.candidate_score, mdp.CANDIDATE_SCORES),
                                 ("text-side", cfg.text_side, mdp.TEXT_SIDES),
                                 ("negatives", cfg.negatives, mdp.NEGATIVES),
                                 ("refine-timing", cfg.refine_timing, mdp.REFINE_TIMINGS),
                                 ("fuse", cfg.fuse, mdp.FUSE_ON),
                                 ("proxy-init", cfg.proxy_init, mdp.PROXY_INITS)):
        if value not in allowed:
            raise MdclustError(f"--{name} must be one of {', '.join(allowed)}, not {value!r}")
    if cfg.reference < 2 or cfg.u_weight < 0:
        raise MdclustError("--reference must be at least 2 and --u-weight >= 0")
    if cfg.lr <= 0 or cfg.weight_decay < 0 or cfg.tau_alpha <= 0 or cfg.sigma <= 0:
        raise MdclustError("--lr, --tau-alpha and --sigma must be > 0, --wd >= 0")


def train(store: StoreLike, interest: str | None, *, method: str = "multidproxy",
          k: int | None = None,
          config: TrainConfig | None = None, device: str = "auto", model: str | None = None,
          grid: bool = False, grid_epochs: int | None = None,
          show_progress: bool = False, stop_after: int | None = None) -> TrainResult:
    """Train and store fused features. ``stop_after`` ends the run early after that many epochs
    of this call (leaving the checkpoint), which is how tests interrupt a run."""
    store = as_store(store)
    if k is not None and k < 2:  # 0 is a value given, not "use the candidates' k"
        raise MdclustError("--k must be at least 2")
    if method not in TRAINED_METHODS:
        raise MdclustError(f"unknown training method {method!r}: use {', '.join(TRAINED_METHODS)}")
    if method == "pipcdr":
        from mdclust.stages.train_pipcdr import PipcdrConfig, train_pipcdr

        cfg = config or PipcdrConfig(k=0)
        cfg.k = k or cfg.k or None
        return train_pipcdr(store, interest, cfg, device=device, model=model,
                            show_progress=show_progress, stop_after=stop_after)
    t0 = time.perf_counter()
    interest = validate_interest(interest)
    store.validate()
    store.check_writable()  # before the work, not at commit
    words = load_candidates(store, interest)
    feats = load_image_features(store, model)
    k = k or (config.k if config else None) or store.attrs(
        layout.candidates(interest)).get("k")
    if not k:
        raise MdclustError("give --k, the number of clusters")
    cfg = config or TrainConfig(k=k)
    cfg.k = int(k)
    _validate(cfg, len(feats.paths), len(words))

    from mdclust.core.encoders import resolve_device

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
            run.checkpoint.save(run.fit_.state())
            rows.append({"seed": run.cfg.seed, "final_loss": round(run.fit_.curves["loss"][-1], 6),
                         "silhouette": round(_silhouette(out[0], cfg.k, cfg.seed), 6)})
    chosen = _pick_restart(rows)["seed"] if rows else run.cfg.seed
    if chosen != run.cfg.seed:
        run = new_run(chosen)
        out = run.fit(False, None)  # from its final checkpoint: no training
    result = TrainResult(interest, method, cfg.k, len(feats.paths), cfg.epochs,
                         resumed_from=resumed[run.cfg.seed], candidates_start=len(words),
                         candidates=[words[i] for i in run.fit_.active], grid=grid_rows,
                         restarts=rows, seed=run.cfg.seed)
    fused, proxies = out
    curves = {name: np.array(vals, dtype=np.float64) for name, vals in run.fit_.curves.items()}
    hist_round = [r for r, kept in enumerate(run.fit_.history, start=1) for _ in kept]
    hist_word = [words[i] for kept in run.fit_.history for i in kept]
    params = {**asdict(cfg), "chosen_seed": run.cfg.seed, "model_key": feats.key, "device": dev,
              "prompt": prompt_for(interest, cfg.object_word), "grid": bool(grid)}
    with store.transaction() as txn:
        txn.put_group(layout.trained(interest, method), {
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
    """One training run (methods.multidproxy.Fit) with its checkpoint."""

    def __init__(self, store, interest, method, feats, words, C_all, prompt, star, cfg, dev):
        from mdclust.methods.multidproxy_net import Fit

        self.cfg = cfg
        self.fit_ = Fit(feats.vectors, C_all, prompt, star, cfg, dev)
        self.resumed_from = self.epochs_this_call = 0
        self.train_seconds = 0.0
        self.checkpoint = Checkpoint(store, method, {
            "interest": interest, "method": method, "cfg": asdict(cfg), "key": feats.key,
            "paths": feats.paths, "words": words})
        state = self.checkpoint.load(dev)
        if state is not None:
            self.fit_.load(state)
            self.resumed_from = self.fit_.epoch

    def fit(self, show_progress: bool, stop_after: int | None):
        fit, cfg = self.fit_, self.cfg
        with progress_bar(show_progress, unit="epochs") as bar:
            task = bar.add_task("multidproxy", total=cfg.epochs, completed=fit.epoch)

            def on_epoch(sums: dict) -> None:
                self.epochs_this_call += 1
                self.train_seconds += sums["seconds"]
                if fit.epoch % cfg.checkpoint_every == 0 and fit.epoch < cfg.epochs:
                    self.checkpoint.save(fit.state())
                bar.update(task, completed=fit.epoch, description=(
                    f"multidproxy loss {sums['loss']:.4f} align {sums['align']:.3f} "
                    f"u {sums['u']:.3f} c {sums['c']:.3f} |C| {len(fit.active)}"))

            if not fit.run(on_epoch, stop_after):
                return None
        return fit.fused(), fit.all_proxies()


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

    from mdclust.methods.baselines import kmeans

    labels = kmeans(fused, k, seed=seed)
    if len(set(labels)) < 2:
        return -1.0
    sample = SILHOUETTE_SAMPLE if len(fused) > SILHOUETTE_SAMPLE else None
    return float(silhouette_score(fused, labels, metric="cosine", sample_size=sample,
                                  random_state=seed))


def trained_features(store: Store, interest: str | None,
                     method: str) -> tuple[list[str], np.ndarray]:
    g = store.read_group(layout.trained(interest, method))
    if g is None:
        where = f" for {interest!r}" if interest else ""
        flag = f" --interest {interest}" if interest else ""
        raise MdclustError(f"no trained {method}{where}; run `mdclust train{flag} "
                           f"--method {method}` first")
    return list(g["path"]), np.asarray(g["fused" if "fused" in g.data else "features"],
                                       dtype=np.float32)

