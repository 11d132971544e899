"""`mdclust embed --engine ray`: the decode → encode step of `embed` as a Ray Data pipeline.

Only the batch loop moves to Ray: planning (what changed), the journal and the final merge stay in
``embed``, so the Ray engine has the local engine's incremental, dedup, skip and resume rules by
construction. The unique contents still to encode become a dataset of (sha, path) rows;
``map_batches`` hands blocks to model actors (one per GPU, or one per CPU) that each load the
encoder once and run the local engine's own loop on their block (``encode_runner``: decoding in
DataLoader worker processes beside a GPU, inline on a CPU slot); the driver takes the output
block by block and journals each block as one shard through the caller's sink. A run that stops
leaves its shards in the journal, and the next run plans around them (docs/scale.md).

ray is imported inside the functions: it is an optional extra, and a run with nothing to encode
never imports it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import logging
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from mdclust.core import errors
from mdclust.core.encoders import CONFIG_DIR_ENV, ModelSpec, hub_offline, model_spec
from mdclust.core.errors import BadInput, MdclustError
from mdclust.stages import ray_connect

ENGINES = ("local", "ray")
MISSING = "the ray engine needs ray: pip install 'mdclust[ray]'"
# Model copies on a CPU-only cluster: beyond this, more actors mostly add memory.
MAX_CPU_ACTORS = 16
# Decoding processes beside each GPU actor, as the local engine's --workers default.
MAX_DECODE_WORKERS = 8
# Rows per block for a GPU actor: its decoding processes start once per block, so a block holds
# many forward passes (a CPU actor's block is one batch).
GPU_BLOCK_ROWS = 4096
# Test hook: stop (as Ctrl-C does) after this many shards are journalled, to test resuming.
STOP_AFTER_ENV = "MDCLUST_TEST_RAY_STOP_AFTER"

# sink(shas encoded, their vectors (n, d) or None, [(sha, reason) of files that did not decode])
Sink = Callable[[list[str], "np.ndarray | None", list[tuple[str, str]]], None]


def check_engine(engine: str) -> None:
    """Validate ``--engine`` without importing ray; a missing ray is a one-line error."""
    if engine not in ENGINES:
        raise BadInput(f"unknown engine {engine!r}: use {' or '.join(ENGINES)}")
    if engine == "ray":
        try:
            found = importlib.util.find_spec("ray") is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise MdclustError(MISSING)


def _import_ray():
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise MdclustError(MISSING) from exc
    return ray


@contextlib.contextmanager
def _quiet(ray):
    """Ray's chatter off the terminal for the run: its warnings (token auth, deprecations,
    disabled progress bars), Ray Data's progress bars (ours is the bar) and its logged
    tracebacks, which come back to us as the exception that becomes the one-line error. Ray's
    driver also prints the errors the cluster reports (task retries, a dying actor) on stdout,
    which --json keeps for its one object. Everything stays in Ray's session logs
    (/tmp/ray/session_latest/logs). Settings are restored afterwards, for Python callers."""
    levels = {"ray": logging.ERROR, "ray.data": logging.CRITICAL}
    saved = {name: logging.getLogger(name).level for name in levels}
    ctx = ray.data.DataContext.get_current()
    flags = {"enable_progress_bars": False, "print_on_execution_start": False,
             "enable_auto_log_stats": False}
    saved_flags = {k: getattr(ctx, k) for k in flags if hasattr(ctx, k)}
    try:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        for k in saved_flags:
            setattr(ctx, k, flags[k])
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
            yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)
        for k, v in saved_flags.items():
            setattr(ctx, k, v)


def _connect(ray, address: str | None) -> bool:
    """Join the cluster at ``address`` (or $RAY_ADDRESS), or start a local instance; True when
    this call did either (so the caller disconnects), False when Ray was already initialised."""
    if ray.is_initialized():
        return False
    quiet = dict(log_to_driver=False, logging_level=logging.ERROR)
    address = address or os.environ.get("RAY_ADDRESS")
    timeout = ray_connect.connect_timeout() if address else 0.0
    try:
        if address:
            ray_connect.probe(address)
            ray_connect.bounded(lambda: ray.init(address=address, **quiet), timeout)
        else:
            ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False,
                     **quiet)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise MdclustError(f"cannot connect to {where}: {first[:300]}") from exc
    return True


@dataclass(frozen=True)
class Plan:
    actors: int
    cpus: float  # reserved per actor: itself and its decoding processes
    gpus: float  # per actor
    device: str
    workers: int  # decoding processes per actor; 0 decodes inline
    rows: int  # rows per block, a multiple of the batch size: one journal shard


def plan(resources: dict, device: str, n: int, batch_size: int) -> Plan:
    """How to encode ``n`` items on a cluster with ``resources`` (``ray.cluster_resources()``):
    one actor per GPU when there are GPUs (and --device allows them), with the CPUs beside each
    GPU decoding; else one single-CPU actor per CPU (at most MAX_CPU_ACTORS). Never more actors
    than blocks."""
    device = (device or "auto").lower()
    if device == "mps":
        raise BadInput("the ray engine runs on cpu or cuda, not mps")
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise BadInput(f"unknown device {device!r}: use auto, cpu, cuda or mps")
    cpus, gpus = float(resources.get("CPU", 1)), int(resources.get("GPU", 0))
    if device.startswith("cuda") and not gpus:
        raise MdclustError("--device cuda was asked for but the Ray cluster has no GPU")
    if gpus and device != "cpu":
        per_gpu = cpus / gpus
        workers = max(0, min(MAX_DECODE_WORKERS, int(per_gpu) - 1))
        rows = _ceil(min(GPU_BLOCK_ROWS, _ceil(n, gpus)), batch_size) * batch_size
        return Plan(max(1, min(gpus, _ceil(n, rows))), min(per_gpu, workers + 1), 1, "cuda",
                     workers, rows)
    actors = max(1, min(int(cpus), MAX_CPU_ACTORS, _ceil(n, batch_size)))
    return Plan(actors, 1, 0, "cpu", 0, batch_size)


def _ceil(a: int, b: int) -> int:
    return max(1, -(-a // b))


class ModelActor:
    """A Ray Data model actor: loads the encoder once, then decodes and encodes blocks."""

    def __init__(self, spec: ModelSpec, device: str, precision: str, offline: bool,
                 env: dict[str, str], batch_size: int, workers: int):
        from mdclust.core.encoders import ClipEncoder

        os.environ.update(env)  # a cluster's workers do not inherit the driver's environment
        if spec.is_file and not Path(spec.pretrained).is_file():
            # bundled weights sit inside each node's own install of mdclust
            mine = model_spec(spec.model)
            spec = mine if mine.weights_sha256 == spec.weights_sha256 else spec
        self.encoder = ClipEncoder(spec, device=device, precision=precision, offline=offline,
                                   progress=False)
        self.batch_size, self.workers = batch_size, workers

    def __call__(self, block: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from mdclust.core.encode_runner import DecodeDataset, encode_batches

        files = [Path(str(p)) for p in block["path"]]
        out: list[np.ndarray] = []
        reason = np.array([""] * len(files), dtype=object)

        def sink(idx, vecs, bad) -> None:
            if vecs is not None:
                if not out:
                    out.append(np.zeros((len(files), vecs.shape[1]), dtype=np.float16))
                out[0][idx] = vecs
            for i, why in bad:
                reason[i] = why or "not decoded"

        encode_batches(self.encoder, DecodeDataset(files, self.encoder.preprocess), sink,
                       batch_size=self.batch_size, workers=self.workers)
        vectors = out[0] if out else np.zeros((len(files), self.encoder.dim or 1), np.float16)
        return {"sha": np.asarray(block["sha"]), "vector": vectors, "reason": reason}


def _cause(exc: BaseException) -> BaseException:
    """The user-code exception under Ray's wrappers: a RayTaskError's ``cause`` (it also
    subclasses the user's class), Ray Data's UserCodeException's ``__cause__``."""
    for _ in range(32):
        inner = getattr(exc, "cause", None)
        if not isinstance(inner, BaseException):
            inner = exc.__cause__ if type(exc).__name__.endswith("UserCodeException") else None
        if inner is None or inner is exc:
            break
        exc = inner
    return exc


def _as_error(exc: BaseException) -> MdclustError:
    """A one-line MdclustError for what stopped the Ray pipeline. An actor that failed to start
    (unknown model, weights missing on a node) only comes back as text ending in the traceback's
    last line, so mdclust's own errors are recognised there too."""
    cause = _cause(exc)
    if isinstance(cause, MdclustError):
        return cause
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    for line in reversed(lines):
        own = re.match(r"mdclust\.core\.errors\.(\w+): (.+)", line)
        if own:
            kind = getattr(errors, own.group(1), MdclustError)
            return (kind if isinstance(kind, type) and issubclass(kind, MdclustError)
                    else MdclustError)(own.group(2))
    last = lines[-1] if lines else ""
    return MdclustError(f"the ray engine failed: {type(cause).__name__}: {last[:300]}")


def run(spec: ModelSpec, items: list[tuple[str, Path]], sink: Sink, *, batch_size: int,
        device: str = "auto", precision: str = "auto", offline: bool = False,
        address: str | None = None, bar=None, label: str = "embedding (ray)") -> None:
    """Encode ``items`` (sha, file) on Ray and hand each output block to ``sink`` on the driver,
    advancing ``bar`` (a progress bar from mdclust.core.progress, or None)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # Ray's own, about its settings
        ray = _import_ray()
        warnings.simplefilter("ignore", DeprecationWarning)  # again: ray's import put its own
        with _quiet(ray):
            started = _connect(ray, address)
            try:
                _stream(ray, spec, items, sink, batch_size, device, precision, offline, bar,
                        label)
            except Exception as exc:
                error = _as_error(exc)
                if error is exc:
                    raise
                raise error from exc
            finally:
                if started:
                    ray.shutdown()


def _no_restarts(map_batches) -> dict:
    """max_restarts=0 where this Ray takes it: an actor that dies fails the run at once (the
    journal makes the rerun cheap) instead of Ray reloading the model, and the driver's C++ core
    does not print its line about restartable actors on stderr."""
    params = inspect.signature(map_batches).parameters.values()
    takes = any(p.kind is p.VAR_KEYWORD or p.name == "max_restarts" for p in params)
    return {"max_restarts": 0} if takes else {}


def _stream(ray, spec, items, sink, batch_size, device, precision, offline, bar, label) -> None:
    how = plan(ray.cluster_resources(), device, len(items), batch_size)
    env = {k: os.environ[k] for k in (CONFIG_DIR_ENV,) if k in os.environ}
    model = dict(spec=spec, device=how.device, precision=precision,
                 offline=hub_offline(offline), env=env, batch_size=batch_size,
                 workers=how.workers)
    # Blocks of at most how.rows rows, each handed whole to one actor call (batch_size=None),
    # so that each output block is one journal shard.
    ds = ray.data.from_items([{"sha": sha, "path": str(path)} for sha, path in items],
                             override_num_blocks=_ceil(len(items), how.rows))
    ds = ds.map_batches(ModelActor, batch_size=None, batch_format="numpy",
                        compute=ray.data.ActorPoolStrategy(size=how.actors),
                        num_cpus=how.cpus, num_gpus=how.gpus,
                        fn_constructor_kwargs=model, **_no_restarts(ds.map_batches))
    task = bar.add_task(label, total=len(items)) if bar is not None else None
    stop_after = int(os.environ.get(STOP_AFTER_ENV) or 0)
    blocks = iter(ds.iter_batches(batch_size=None, batch_format="numpy"))
    try:
        for shards, block in enumerate(blocks, 1):
            shas = [str(s) for s in block["sha"]]
            reasons = [str(r) for r in block["reason"]]
            ok = [i for i, r in enumerate(reasons) if not r]
            sink([shas[i] for i in ok], block["vector"][ok] if ok else None,
                 [(s, r) for s, r in zip(shas, reasons) if r])
            if task is not None:
                bar.advance(task, len(shas))
            if stop_after and shards >= stop_after:
                raise KeyboardInterrupt(f"{STOP_AFTER_ENV}={stop_after}")
    finally:
        close = getattr(blocks, "close", None)
        if close is not None:
            close()  # stops the pipeline and its actors when the driver stops early
