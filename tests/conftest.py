import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

# Never reach a model hub from the tests; the tiny test config is found through this variable,
# also by `mdclust` subprocesses, which inherit the environment.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["MDCLUST_MODEL_CONFIGS"] = str(Path(__file__).parent / "model_configs")
os.environ.pop("MDCLUST_STORE", None)
# The suite is hundreds of small torch jobs in a row: one thread each is the fastest setting on
# 2 cores (docs/benchmarks.md, "Two commands at once": the default's sleeping threads cost ~20 %
# on small models) and keeps a second run beside this one from slowing it. tests/test_threads.py
# clears it to test the default.
os.environ.setdefault("MDCLUST_THREADS", "1")
# The int8 towers and the remembered preprocessing go to a cache of the run's own, not the
# user's ~/.cache/mdclust.
os.environ.setdefault("MDCLUST_CACHE", tempfile.mkdtemp(prefix="mdclust-test-cache-"))

TINY = "mdclust-test-tiny"
MDCLUST = str(Path(sys.executable).with_name("mdclust"))


def load_script(name: str):
    """A module of scripts/ (training and evaluation tools, not part of the package)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def write_images(folder: Path, n: int, seed: int = 0, size=(40, 48), prefix="img") -> list[Path]:
    """n distinct random PNG files (deterministic), half of them in a subfolder."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        sub = folder / ("sub" if i % 2 else "")
        sub.mkdir(parents=True, exist_ok=True)
        p = sub / f"{prefix}{i:04d}.png"
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(p)
        out.append(p)
    return out


def shapes_store(work: Path, n: int, seed: int) -> tuple[Path, Path]:
    """n generated shapes images of ``seed`` in work/images, embedded by the bundled
    mdclust-tiny into work/s.h5: (the store's path, labels.csv)."""
    import mdclust
    from mdclust.datasets import generate_shapes

    labels = generate_shapes(work / "images", n=n, seed=seed)
    store = work / "s.h5"
    mdclust.embed(work / "images", store, model="mdclust-tiny", labels=labels, workers=0)
    return store, labels


def embedded_store(tmp_path: Path, n: int):
    """A real store with n random 24 px images embedded by the tiny random-weight test model."""
    from mdclust.core.store import Store
    from mdclust.stages.embed import embed

    folder = tmp_path / "imgs"
    write_images(folder, n, size=(24, 24))
    st = Store(tmp_path / "s.h5")
    embed(folder, st, model=TINY, pretrained="random", workers=0)
    return st


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    write_images(folder, 12)
    return folder


@pytest.fixture
def store_path(tmp_path):
    return tmp_path / "store.h5"
