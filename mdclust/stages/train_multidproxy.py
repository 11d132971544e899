"""Multi-DProxy's stage adapter: candidates and image features from the store, restarts and
the optional lr x weight-decay grid, through the training harness (stages/train.py)."""

from __future__ import annotations

import time
from dataclasses import asdict, replace

import numpy as np

from mdclust.core.checkpoint import Checkpoint
from mdclust.core.errors import BadInput
from mdclust.core.features import load_image_features
from mdclust.core.layout import candidates_source, read_candidates, validate_interest
from mdclust.core.rowfile import RowFile
from mdclust.core.textcache import text_features
from mdclust.methods import multidproxy as mdp
from mdclust.methods.multidproxy import MultiDProxyConfig
from mdclust.stages import kchoice
from mdclust.stages.train import TrainResult, run_epochs, save

LOSS_TIE = 0.01  # restarts this close to the lowest final loss count as equally good
# Silhouette costs O(n^2) (measured on one core at 512-d: 3.4 s for 10k images, 31 s for 40k);
# above this many images it is scored on a seeded random sample of this size (1.0 s at 100k),
# so restarts and grid points stay cheap. Smaller collections are scored exactly.
SILHOUETTE_SAMPLE = 10_000


def prompt_for(interest: str, object_word: str) -> str:
    article = "An" if object_word[:1].lower() in "aeiou" else "A"
    return f"{article} {object_word} with {interest} of *"


def _validate(cfg: MultiDProxyConfig, n: int, n_candidates: int) -> None:
    if cfg.k < 2:
        raise BadInput("--k must be at least 2")
    if cfg.k > n:
        raise BadInput(f"--k {cfg.k} is more than the number of images ({n})")
    if cfg.k > n_candidates:
        raise BadInput(f"--k {cfg.k} is more than the number of candidates "
                       f"({n_candidates}); ask for more with `mdclust candidates --k`")
    if min(cfg.epochs, cfg.refine_every, cfg.layers, cfg.restarts) < 1 or cfg.batch < 2:
        raise BadInput("--epochs, --refine-every, --layers, --restarts must be >= 1 "
                       "and --batch >= 2")
    for name, value, allowed in (("candidate-score", cfg.candidate_score, mdp.CANDIDATE_SCORES),
                                 ("text-side", cfg.text_side, mdp.TEXT_SIDES),
                                 ("negatives", cfg.negatives, mdp.NEGATIVES),
                                 ("refine-timing", cfg.refine_timing, mdp.REFINE_TIMINGS),
                                 ("fuse", cfg.fuse, mdp.FUSE_ON),
                                 ("proxy-init", cfg.proxy_init, mdp.PROXY_INITS)):
        if value not in allowed:
            raise BadInput(f"--{name} must be one of {', '.join(allowed)}, not {value!r}")
    if cfg.reference < 2 or cfg.u_weight < 0:
        raise BadInput("--reference must be at least 2 and --u-weight >= 0")
    if cfg.lr <= 0 or cfg.weight_decay < 0 or cfg.tau_alpha <= 0 or cfg.sigma <= 0:
        raise BadInput("--lr, --tau-alpha and --sigma must be > 0, --wd >= 0")


class _Inputs:
    """What every run of one `train` call shares: features, candidates and prompt vectors."""

    def __init__(self, store, interest, feats, words, cfg, dev):
        self.store, self.interest, self.feats, self.words, self.dev = (
            store, interest, feats, words, dev)
        extra = [prompt_for(interest, cfg.object_word), "*"]
        if cfg.candidate_template == "{}":
            # one call, so one commit to the cache group: a kill leaves it old or complete
            both = text_features(store, [*words, *extra], "{}", model=feats.key)
            self.C_all, (self.prompt, self.star) = both[:len(words)], both[len(words):]
        else:
            self.C_all = text_features(store, words, cfg.candidate_template, model=feats.key)
            self.prompt, self.star = text_features(store, extra, "{}", model=feats.key)

    def run(self, cfg: MultiDProxyConfig, show_progress=False, stop_after=None, tag=None):
        """Train one configuration (resuming from its checkpoint): (Fit, Progress, checkpoint)."""
        from mdclust.methods.multidproxy_net import Fit

        fit = Fit(self.feats.vectors, self.C_all, self.prompt, self.star, cfg, self.dev)
        checkpoint = Checkpoint(self.store, "multidproxy", {
            "interest": tag or self.interest, "method": "multidproxy", "cfg": asdict(cfg),
            "key": self.feats.key, "paths": self.feats.paths,
            "words": list(range(len(self.C_all))) if tag else self.words})
        progress = run_epochs(
            fit, checkpoint, total=cfg.epochs, checkpoint_every=cfg.checkpoint_every,
            device=self.dev, label="multidproxy", show_progress=show_progress,
            stop_after=stop_after,
            describe=lambda s: (f"loss {s['loss']:.4f} align {s['align']:.3f} u {s['u']:.3f} "
                                f"c {s['c']:.3f} |C| {len(fit.active)}"))
        return fit, progress, checkpoint


def train_multidproxy(store, interest: str | None, cfg: MultiDProxyConfig | None, *,
                      k: int | None = None, k_max: int | None = None, device: str = "auto",
                      model: str | None = None, grid: bool = False,
                      grid_epochs: int | None = None, show_progress: bool = False,
                      stop_after: int | None = None) -> TrainResult:
    from mdclust.core.encoders import resolve_device

    t0 = time.perf_counter()
    interest = validate_interest(interest)
    store.validate()
    store.check_writable()  # before the work, not at commit
    words = read_candidates(store, interest)
    feats = load_image_features(store, model)
    source = candidates_source(store, interest)
    # the candidate refinement ends at k: the given one, or the images' votes over the words
    choice = kchoice.for_interest(store, interest, k or (cfg.k if cfg else None) or None,
                                  len(feats.paths), feats.vectors, feats.key, k_max=k_max,
                                  words=words, source=source)
    k = choice.k
    cfg = replace(cfg or MultiDProxyConfig(k=k), k=int(k))
    _validate(cfg, len(feats.paths), len(words))
    cfg = replace(cfg, candidate_score=mdp.candidate_score_for(cfg.candidate_score, source))
    dev = resolve_device(device)
    inputs = _Inputs(store, interest, feats, words, cfg, dev)
    grid_rows: list[dict] = []
    if grid:
        cfg, grid_rows = _grid_search(inputs, cfg, grid_epochs or cfg.epochs)

    rows, checkpoints, resumed, seconds, epochs = [], [], {}, 0.0, 0
    for r in range(cfg.restarts):
        run_cfg = replace(cfg, seed=cfg.seed + r)
        fit, progress, checkpoint = inputs.run(run_cfg, show_progress, stop_after)
        checkpoints.append(checkpoint)
        if not progress.finished:  # stopped early on purpose: the checkpoint holds the state
            return TrainResult(interest, "multidproxy", cfg.k, len(feats.paths), cfg.epochs,
                               resumed_from=progress.resumed_from, candidates_start=len(words),
                               seconds=round(time.perf_counter() - t0, 3), finished=False)
        resumed[run_cfg.seed] = progress.resumed_from
        seconds, epochs = seconds + progress.seconds, epochs + progress.epochs
        if cfg.restarts > 1:
            # keep every finished restart on disk, not in memory, until one is chosen
            checkpoint.save(fit.state())
            rows.append({"seed": run_cfg.seed, "final_loss": round(fit.curves["loss"][-1], 6),
                         "silhouette": round(_silhouette(fit.fused(), cfg.k, cfg.seed), 6)})
    chosen = _pick_restart(rows)["seed"] if rows else run_cfg.seed
    if chosen != run_cfg.seed:
        fit = inputs.run(replace(cfg, seed=chosen))[0]  # from its final checkpoint: no training
    # Both outputs go to nameless files beside the store, a chunk at a time, and the commit
    # copies them in blocks: at 1M x 512 they are 2 GB of float32 each, which would otherwise
    # be held on top of the method's own 2 GB of per-image parameters.
    n, d = len(feats.paths), fit.v.shape[1]
    fused = fit.fused(out=RowFile((n, d), np.float32, folder=store.path.parent))
    proxies = fit.all_proxies(out=RowFile((n, d), np.float32, folder=store.path.parent))
    result = TrainResult(interest, "multidproxy", cfg.k, len(feats.paths), cfg.epochs,
                         resumed_from=resumed[chosen], candidates_start=len(words),
                         candidates=[words[i] for i in fit.active], grid=grid_rows,
                         restarts=rows, seed=chosen, k_choice=choice.to_json())
    params = {**asdict(cfg), "chosen_seed": chosen, "model_key": feats.key, "device": dev,
              "prompt": prompt_for(interest, cfg.object_word), "grid": bool(grid),
              "k_choice": choice.to_json()}
    save(store, interest, "multidproxy", {
        "path": feats.paths, "fused": fused, "proxies": proxies,
        "candidates": result.candidates,
        "history_round": np.array([r for r, kept in enumerate(fit.history, start=1)
                                   for _ in kept], dtype=np.int32),
        "history_word": [words[i] for kept in fit.history for i in kept],
    }, fit.curves, {"params": params, "candidates_start": len(words), "grid": grid_rows,
                    "restarts": rows, "resumed_from": result.resumed_from})
    fused.close()
    proxies.close()
    for checkpoint in checkpoints:
        checkpoint.remove()
    result.final_loss = float(fit.curves["loss"][-1])
    result.seconds = round(time.perf_counter() - t0, 3)
    result.seconds_per_epoch = round(seconds / max(1, epochs), 4)
    return result


def _pick_restart(rows: list[dict]) -> dict:
    """Among restarts ({seed, final_loss, silhouette}): those whose final loss is within
    LOSS_TIE (relative) of the lowest are equally good optima of the objective; of these, the
    one whose fused features separate best into k groups (silhouette) is kept."""
    lowest = min(r["final_loss"] for r in rows)
    tied = [r for r in rows if r["final_loss"] <= lowest + LOSS_TIE * abs(lowest)]
    return max(tied, key=lambda r: r["silhouette"])


def _grid_search(inputs: _Inputs, cfg: MultiDProxyConfig, epochs: int):
    """The paper's lr x weight-decay grid, chosen WITHOUT labels: the silhouette (cosine) of
    k-means on the fused features, a label-free measure of how well they separate into k."""
    rows, best = [], None
    for lr in mdp.LR_GRID:
        for wd in mdp.WD_GRID:
            trial = replace(cfg, lr=lr, weight_decay=wd, epochs=epochs,
                            refine_every=max(1, cfg.refine_every * epochs // cfg.epochs),
                            checkpoint_every=10 ** 9)
            fit = inputs.run(trial, tag="grid")[0]
            score = _silhouette(fit.fused(), cfg.k, cfg.seed)
            rows.append({"lr": lr, "weight_decay": wd, "silhouette": round(score, 6)})
            if best is None or score > best[0]:
                best = (score, lr, wd)
    return replace(cfg, lr=best[1], weight_decay=best[2]), rows


def _silhouette(fused: np.ndarray, k: int, seed: int) -> float:
    """Cosine silhouette of k-means on the fused features: how well they separate into k
    groups, measured without labels (selects grid points and restarts)."""
    from mdclust.methods.baselines import kmeans
    from mdclust.methods.kselect import silhouette

    return silhouette(fused, kmeans(fused, k, seed=seed), seed, sample=SILHOUETTE_SAMPLE)
