"""PIPCDR's settings and defaults, without torch (the CLI reads them for --help and to build a
run); the network and training loop are in pipcdr.py."""

from __future__ import annotations

from dataclasses import asdict, dataclass

# The paper's settings are for training a backbone; these, for a head on frozen features, were
# tuned on scikit-learn's digits (docs/methods/pipcdr.md), never on the demo's data.
EPOCHS, BATCH, LR, WEIGHT_DECAY = 300, 64, 1e-3, 1e-5
EMA, SIGMA, W_PIP, TAU, KMEANS_EVERY, QUEUE = 0.99, 0.1, 0.7, 0.2, 2, 4096
HIDDEN, OUT = 512, 128


@dataclass
class PipcdrConfig:
    k: int | None  # None: the interest's candidates' k
    epochs: int = EPOCHS
    batch: int = BATCH
    lr: float = LR
    weight_decay: float = WEIGHT_DECAY
    ema: float = EMA
    sigma: float = SIGMA
    w_pip: float = W_PIP
    tau: float = TAU
    kmeans_every: int = KMEANS_EVERY
    queue: int = QUEUE
    hidden: int = HIDDEN
    out: int = OUT
    seed: int = 0
    features: str = "images"  # images, or INTEREST:METHOD (another method's features)
    views: str = "auto"  # "auto" (stored views if any), "none", or a set name ("crop+flip")
    checkpoint_every: int = 10

    def model_kwargs(self) -> dict:
        """The fields pipcdr.Trainer takes (the rest say where inputs come from)."""
        skip = ("k", "features", "views", "checkpoint_every")
        return {k: v for k, v in asdict(self).items() if k not in skip}
