"""The bundled tiny CLIP must stay useful: zero-shot floors over each aspect's *full*
vocabulary, below the measured figures (docs/models.md) but far above chance (color 1/16,
shape 1/12, background 1/10, count 1/4, texture 1/5)."""

import importlib.util
import json
from pathlib import Path

from mdclust.core.encoders import BUNDLED_WEIGHTS, ClipEncoder, model_spec

ROOT = Path(__file__).resolve().parents[1]
FLOORS = {"color": 0.95, "shape": 0.85, "background": 0.95, "count": 0.95, "texture": 0.95}


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bundled_weights_are_small_and_load_offline():
    path = BUNDLED_WEIGHTS["mdclust-tiny"]
    assert path.is_file() and path.stat().st_size < 20e6
    spec = model_spec("mdclust-tiny")
    assert spec.is_file and spec.key.startswith("mdclust-tiny@file-")
    enc = ClipEncoder(spec, device="cpu")
    assert enc.dim == 64
    report = json.loads(path.with_suffix(".json").read_text())
    acc = report["zero_shot_accuracy"]
    assert acc["color"] >= 0.90 and acc["shape"] >= 0.90
    assert min(acc[a] for a in ("background", "count", "texture")) >= 0.80
    assert float(report["minutes"]) <= 20


def test_zero_shot_floor_on_fresh_images(tmp_path):
    acc = load_script("eval_tiny_clip").zero_shot_accuracy(n=300, seed=30_000, workdir=tmp_path)
    for aspect, floor in FLOORS.items():
        assert acc[aspect] >= floor, (aspect, acc)
