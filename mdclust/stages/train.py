"""`mdclust train`: learn clustering features with a trained method, resumably.

One harness serves every trained method (mdclust.methods, kind "trained"): the method's stage
adapter (stages/train_multidproxy.py, stages/train_pipcdr.py) reads its inputs from the store
and builds a trainer; ``run_epochs`` drives it with the progress bar and checkpoints, and
``save`` stores the result with its curves and provenance.

Checkpoints go to ``<store>.checkpoints/`` every few epochs (model, optimiser, random states,
curves), named by a hash of everything that defines the run, so rerunning the same command
after a crash or ``kill -9`` resumes from the last checkpoint and ends where an uninterrupted
run would.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Protocol

import numpy as np

from mdclust.core import layout
from mdclust.core.checkpoint import Checkpoint
from mdclust.core.errors import BadInput
from mdclust.core.progress import progress_bar
from mdclust.core.store import Store, StoreLike, as_store
from mdclust.methods import get
from mdclust.methods.multidproxy import MultiDProxyConfig

TrainConfig = MultiDProxyConfig  # the name 0.1 scripts use


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
    finished: bool = True  # False when ``stop_after`` ended the call (the checkpoint holds it)
    k_choice: dict | None = None  # the k and how it was chosen (methods/kselect.KChoice)

    def to_json(self) -> dict:
        return asdict(self)


class Trainer(Protocol):
    """What the harness needs of a method's training loop (methods/multidproxy_net.Fit,
    methods/pipcdr.Trainer)."""

    epoch: int
    curves: dict[str, list[float]]

    def epoch_step(self) -> dict[str, float]: ...
    def state(self) -> dict: ...
    def load(self, state: dict) -> None: ...


@dataclass
class Progress:
    """How a run went: where it resumed, how long its epochs took, whether it finished."""

    resumed_from: int = 0
    epochs: int = 0
    seconds: float = 0.0
    finished: bool = False


def run_epochs(trainer: Trainer, checkpoint: Checkpoint | None, *, total: int,
               checkpoint_every: int, device: str, label: str,
               describe: Callable[[dict], str], show_progress: bool = False,
               stop_after: int | None = None) -> Progress:
    """Resume ``trainer`` from its checkpoint, train it to ``total`` epochs with a progress bar,
    saving every ``checkpoint_every``; ``stop_after`` epochs of this call end it early (tests
    interrupt runs this way)."""
    out = Progress()
    state = checkpoint.load(device) if checkpoint is not None else None
    if state is not None:
        trainer.load(state)
        out.resumed_from = trainer.epoch
    with progress_bar(show_progress, unit="epochs") as bar:
        task = bar.add_task(label, total=total, completed=trainer.epoch)
        while trainer.epoch < total:
            if stop_after is not None and out.epochs >= stop_after:
                return out
            t0 = time.perf_counter()
            sums = trainer.epoch_step()
            out.seconds += time.perf_counter() - t0
            out.epochs += 1
            if checkpoint is not None and trainer.epoch % checkpoint_every == 0 \
                    and trainer.epoch < total:
                checkpoint.save(trainer.state())
            bar.update(task, completed=trainer.epoch, description=f"{label} {describe(sums)}")
    out.finished = True
    return out


def save(store: Store, interest: str | None, method: str, data: dict[str, Any],
         curves: dict[str, list[float]], attrs: dict[str, Any]) -> None:
    """Store a trained method's output, its training curves and provenance in one commit."""
    data = {**data, **{f"curve_{name}": np.array(v, dtype=np.float64)
                       for name, v in curves.items()}}
    with store.transaction() as txn:
        txn.put_group(layout.trained(interest, method), data, {"method": method, **attrs})


def train(store: StoreLike, interest: str | None, *, method: str = "multidproxy",
          k: int | None = None, k_max: int | None = None, config: Any = None,
          device: str = "auto",
          model: str | None = None, grid: bool = False, grid_epochs: int | None = None,
          show_progress: bool = False, stop_after: int | None = None) -> TrainResult:
    """Learn clustering features (Multi-DProxy, PIPCDR) and store them; resumable.

    Parameters
    ----------
    store : Store or path
        The mdclust store (HDF5 file).
    interest : str, optional
        The user's interest; required by multidproxy, optional for pipcdr.
    method : str
        A trained method of mdclust.methods: multidproxy or pipcdr.
    k : int, optional
        Number of clusters; default the k given to `candidates` for the interest, else chosen
        (multidproxy: by the images' votes over the candidates; pipcdr: by the silhouette of
        k-means on its input features; docs/k.md).
    k_max : int, optional
        The largest k the choice considers; default what the candidates and images allow.
    config : dataclass, optional
        The method's settings (``mdclust.methods.get(method).settings(...)``:
        MultiDProxyConfig, PipcdrConfig); default its defaults.
    device : str
        auto, cpu, cuda or mps.
    model : str, optional
        Feature set (model key) to use when the store holds several.
    grid : bool
        multidproxy: choose lr and weight decay from the paper's grid by a label-free score.
    grid_epochs : int, optional
        multidproxy: epochs per grid trial; default the run's epochs.
    show_progress : bool
        Show a progress bar on stderr.
    stop_after : int, optional
        End this call after that many epochs, leaving the checkpoint (``finished`` False).

    Returns
    -------
    TrainResult

    Raises
    ------
    BadInput, MissingStage, StaleResult
        With the one-line message the CLI prints.
    """
    store = as_store(store)
    if k is not None and k < 2:  # 0 is a value given, not "use the candidates' k"
        raise BadInput("--k must be at least 2")
    m = get(method, kind="trained")
    cls = m.load("config")
    if config is not None and not isinstance(config, cls):
        raise BadInput(f"config for {method} must be a {cls.__name__}, "
                       f"not {type(config).__name__}")
    return m.load("stage")(store, interest, config, k=k, k_max=k_max, device=device,
                           model=model, grid=grid,
                           grid_epochs=grid_epochs, show_progress=show_progress,
                           stop_after=stop_after)

