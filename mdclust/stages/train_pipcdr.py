"""`mdclust train --method pipcdr`: a PIPCDR head over features already in the store.

The input is the plain image features (``--features images``) or the features another method
produced for an interest (``--features color:multidproxy``, ``color:gradnorm``...). Two views
per image and step come from the stored augmented views (`mdclust embed --views V`) when the
input is image features and views exist; otherwise from feature-space augmentation, which the
result says. Checkpoints as for Multi-DProxy (mdclust/core/checkpoint.py).
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from mdclust.core import layout
from mdclust.core.checkpoint import Checkpoint
from mdclust.core.errors import BadInput, MdclustError, StaleResult
from mdclust.core.features import clustering_features, load_image_features
from mdclust.core.layout import validate_interest
from mdclust.core.store import Store
from mdclust.methods import get
from mdclust.methods.pipcdr_config import PipcdrConfig
from mdclust.stages import kchoice
from mdclust.stages import views as views_mod
from mdclust.stages.train import TrainResult, run_epochs, save


def _validate(cfg: PipcdrConfig) -> None:
    if min(cfg.epochs, cfg.kmeans_every, cfg.hidden, cfg.out, cfg.checkpoint_every) < 1 \
            or cfg.batch < 2 or cfg.queue < 0:
        raise BadInput("--epochs, --kmeans-every must be >= 1, --batch >= 2, --queue >= 0")
    if not 0 <= cfg.ema < 1 or not 0 <= cfg.w_pip <= 1:
        raise BadInput("--ema must be in [0, 1) and --w-pip in [0, 1]")
    if cfg.lr <= 0 or cfg.weight_decay < 0 or cfg.tau <= 0 or cfg.sigma < 0:
        raise BadInput("--lr and --tau must be > 0, --wd and --sigma >= 0")


def input_features(store: Store, interest: str | None, spec: str, model: str | None):
    """(interest, paths, X (n, d) unit rows, model key, image shas or None) for ``--features``."""
    feats = load_image_features(store, model)
    if spec == "images":
        return interest, feats.paths, feats.vectors, feats.key, feats.shas
    source, _, method = spec.partition(":")
    if not method:
        raise BadInput(f"--features {spec!r}: use images or INTEREST:METHOD "
                           "(e.g. color:multidproxy)")
    if interest is not None and interest != source:
        raise BadInput(f"--interest {interest!r} but --features names {source!r}")
    source = validate_interest(source)
    m = get(method)
    if method == "pipcdr":
        raise BadInput("--features cannot be pipcdr's own output")
    if m.kind == "trained":
        paths, X = layout.read_trained(store, source, method)
    else:
        group = layout.read_clustering(store, source, method)
        X = clustering_features(store, group)
        if X is None:
            raise BadInput(f"{method} produces no features to train on; use images or a "
                               "method with features (gradnorm, tac, sic, multidproxy)")
        paths = list(group["path"])
    if paths != feats.paths:
        raise StaleResult(f"the images changed since {source}:{method} was made; run it again")
    X = np.asarray(X, dtype=np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True).clip(min=1e-12)
    return source, paths, X, feats.key, None


def _views(store: Store, cfg: PipcdrConfig, key: str, shas: list[str] | None, X: np.ndarray):
    """((n, V+1, d) views with the plain features as view 0, set name) or (None, reason)."""
    if cfg.views == "none":
        return None, "feature-space augmentation (--views none)"
    if shas is None:
        if cfg.views != "auto":
            raise BadInput("--views applies to --features images only")
        return None, "feature-space augmentation (stored views are of images, not of "\
                     f"{cfg.features})"
    found = views_mod.load(store, key, shas, cfg.views)
    if found is None:
        return None, "feature-space augmentation (no stored views; see `mdclust embed --views`)"
    name, V = found
    return np.concatenate([X[:, None], V], axis=1), f"stored views {name} x{V.shape[1]}"


AUTO_VIEWS = 8


def _make_views(store: Store, key: str, show_progress: bool) -> bool:
    """Encode AUTO_VIEWS augmented views of every image, as `embed --views 8` would, when the
    images are still where they were embedded from. Without image views PIPCDR falls back to
    feature-space noise, which measured worse than k-means on its own input (digits embedded
    by mdclust-tiny: NMI 0.197 against 0.229); stored views are what its gain comes from."""
    root = store.attrs("images").get("root")
    attrs = store.attrs(layout.features(key))
    if not root or not Path(root).is_dir() or not attrs.get("model"):
        return False
    from mdclust.core.encoders import model_spec
    from mdclust.stages.embed import embed

    try:  # the same weights only: other weights would add a second feature set
        if model_spec(attrs["model"], attrs.get("pretrained")).key != key:
            return False
    except MdclustError:
        return False

    embed(root, store, model=attrs["model"], pretrained=attrs.get("pretrained"),
          views=AUTO_VIEWS, augment=views_mod.DEFAULT_AUGMENT, show_progress=show_progress)
    return True


def train_pipcdr(store: Store, interest: str | None, cfg: PipcdrConfig | None, *,
                 k: int | None = None, k_max: int | None = None, device: str = "auto",
                 model: str | None = None, grid: bool = False,
                 grid_epochs: int | None = None, show_progress: bool = False,
                 stop_after: int | None = None) -> TrainResult:
    from mdclust.core.encoders import resolve_device
    from mdclust.methods import pipcdr as pc

    if grid:
        raise BadInput("--grid applies to multidproxy only")
    t0 = time.perf_counter()
    store.validate()
    store.check_writable()  # before the work, not at commit
    if interest is not None:
        interest = validate_interest(interest)
    cfg = replace(cfg or PipcdrConfig(k=None), k=k or (cfg.k if cfg else None) or None)
    _validate(cfg)
    interest, paths, X, key, shas = input_features(store, interest, cfg.features, model)
    # interest-free: the given k, else the best silhouette of k-means on what it trains on
    choice = kchoice.for_features(store, interest, cfg.k, X, k_max=k_max, seed=cfg.seed)
    cfg.k = choice.k
    views, how = _views(store, cfg, key, shas, X)
    made = views is None and cfg.views == "auto" and shas is not None and \
        _make_views(store, key, show_progress)
    if made:
        interest, paths, X, key, shas = input_features(store, interest, cfg.features, key)
        views, how = _views(store, cfg, key, shas, X)

    dev = resolve_device(device)
    trainer = pc.Trainer(X, cfg.k, views, device=dev, **cfg.model_kwargs())
    checkpoint = Checkpoint(store, "pipcdr", {"cfg": asdict(cfg), "key": key, "paths": paths,
                                              "interest": interest, "views": how,
                                              "x": float(X.sum())})
    progress = run_epochs(
        trainer, checkpoint, total=cfg.epochs, checkpoint_every=cfg.checkpoint_every,
        device=dev, label="pipcdr", show_progress=show_progress, stop_after=stop_after,
        describe=lambda s: (f"loss {s['loss']:.4f} pip {s['pip']:.3f} "
                            f"disp {s['dispersion']:.3f} comp {s['compact']:.3f}"))
    result = TrainResult(interest, "pipcdr", cfg.k, len(paths), cfg.epochs,
                         resumed_from=progress.resumed_from, features=cfg.features,
                         augmentation=how + (" (made now: none were stored)" if made else ""),
                         finished=progress.finished, k_choice=choice.to_json())
    if progress.finished:
        params = {**asdict(cfg), "model_key": key, "device": dev, "augmentation": how,
                  "k_choice": choice.to_json()}
        save(store, interest, "pipcdr", {
            "path": paths, "features": trainer.features().astype(np.float32, copy=False),
            "pseudo_label": trainer.labels.cpu().numpy().astype(np.int32),
        }, trainer.curves, {"params": params, "resumed_from": result.resumed_from})
        checkpoint.remove()
        result.final_loss = float(trainer.curves["loss"][-1])
        result.seconds_per_epoch = round(progress.seconds / max(1, progress.epochs), 4)
    result.seconds = round(time.perf_counter() - t0, 3)
    return result
