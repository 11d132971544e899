"""`embed --precision int8`: the image tower as a dynamically quantised ONNX Runtime graph.

Measured on this project's AVX2 CPU without VNNI (docs/benchmarks.md, "A cheaper CPU
forward"): ONNX Runtime's dynamic int8 runs ViT-B-32 at about 1.9x torch fp32, where torch's own
dynamic int8 reaches 1.3x and bf16 0.2x; so int8 means this path. The linear layers' weights
are int8, per output channel; activations are quantised per batch at run time.

Export and quantisation take seconds to a minute (ViT-B-32), once per model: the result is
cached under ``$MDCLUST_CACHE`` (default ~/.cache/mdclust) with the preprocessing it needs, so
later runs build an ONNX Runtime session and open_clip's transform and never construct the
torch model at all (a start-up cut: the forward pass is the only cost left).

Needs ``pip install 'mdclust[int8]'`` (onnxruntime, onnx); imported only for int8.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

from mdclust.core.errors import MdclustError

CACHE_ENV = "MDCLUST_CACHE"
FORMAT = 1  # bump when the export or quantisation changes: old cache entries are then unused
INSTALL_HINT = "pip install 'mdclust[int8]' (onnxruntime and onnx)"


def cache_base() -> Path:
    base = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "mdclust")
    return Path(base).expanduser()


def cache_dir() -> Path:
    return cache_base() / "int8"


def _runtime():
    try:
        import onnxruntime
    except ImportError as exc:
        raise MdclustError(f"--precision int8 needs ONNX Runtime: {INSTALL_HINT}") from exc
    return onnxruntime


def entry_name(spec, fmt: int, *packages: str) -> str:
    """A cache entry's name for ``spec``: the feature key names the weights (a file by its
    hash, a tag by name, random weights are seeded); ``fmt`` and the packages' versions name
    what was made from them."""
    from importlib.metadata import version

    # versions from the metadata: importing open_clip costs seconds this path avoids
    ident = json.dumps([fmt, spec.key, spec.weights_sha256, *map(version, packages)])
    return f"{spec.model.replace('/', '--')}-{hashlib.sha256(ident.encode()).hexdigest()[:16]}"


def cache_name(spec) -> str:
    """One entry per network and toolchain (the graph depends on both packages)."""
    _runtime()
    return entry_name(spec, FORMAT, "open_clip_torch", "onnxruntime")


class Int8Tower:
    """The quantised image tower: ``(N, 3, H, W)`` float pixels -> ``(N, D)`` features."""

    def __init__(self, path: Path, threads: int):
        ort = _runtime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options,
                                            providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def __call__(self, pixels) -> Any:
        import numpy as np

        x = np.ascontiguousarray(pixels.numpy() if hasattr(pixels, "numpy") else pixels,
                                 dtype=np.float32)
        return self.session.run(None, {self.input: x})[0]


def cached(spec) -> tuple[Path, dict] | None:
    """(graph, its sidecar: dim and preprocessing) when the cache holds this network."""
    path = cache_dir() / f"{cache_name(spec)}.onnx"
    meta = path.with_suffix(".json")
    if path.is_file() and meta.is_file():
        try:
            return path, json.loads(meta.read_text())
        except (OSError, ValueError):
            return None  # a damaged sidecar: export again, replacing both
    return None


def build(spec, model) -> tuple[Path, dict]:
    """Export ``model.visual`` to ONNX, quantise it and cache both with the sidecar. Written
    beside the target and renamed, so a killed run or a second process never leaves half a
    graph under the final name."""
    _runtime()
    try:
        import onnxruntime.quantization  # noqa: F401  (needs onnx)
    except ImportError as exc:  # onnxruntime without onnx
        raise MdclustError(f"--precision int8 needs the onnx package: {INSTALL_HINT}") from exc
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder, prefix=".export-") as tmp:
            return _export(spec, model, folder / f"{cache_name(spec)}.onnx", Path(tmp))
    except OSError as exc:
        raise MdclustError(f"cannot write the int8 cache in {folder}: {exc.strerror or exc} "
                           f"(set ${CACHE_ENV} to a writable folder)") from exc


def _export(spec, model, path: Path, tmp: Path) -> tuple[Path, dict]:
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    visual = model.visual.float().eval()
    cfg = dict(getattr(visual, "preprocess_cfg", {}) or {})
    size = cfg.get("size") or visual.image_size
    size = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
    plain, quant = tmp / "fp32.onnx", tmp / "int8.onnx"
    example = torch.zeros(2, 3, *size)
    with torch.inference_mode():
        dim = int(visual(example).shape[-1])
    root = logging.getLogger()
    level = root.level
    try:
        # The TorchScript exporter: the dynamo one needs onnxscript and gave no faster graph.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's notice that it is the legacy one
            torch.onnx.export(visual, (example,), str(plain), input_names=["pixels"],
                              output_names=["features"], opset_version=17, dynamo=False,
                              dynamic_axes={"pixels": {0: "n"}, "features": {0: "n"}})
        root.setLevel(logging.ERROR)  # its advice to pre-process the graph is for static int8
        quantize_dynamic(str(plain), str(quant), weight_type=QuantType.QInt8, per_channel=True)
    except OSError:
        raise
    except Exception as exc:  # an operator the exporter or the quantiser does not handle
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise MdclustError(f"cannot export {spec.model}'s image tower for int8 ({first}); "
                           "use --precision fp32") from exc
    finally:
        root.setLevel(level)
    meta = {"dim": dim, "preprocess": {k: list(v) if isinstance(v, tuple) else v
                                       for k, v in cfg.items()}, "key": spec.key}
    sidecar = tmp / "meta.json"
    sidecar.write_text(json.dumps(meta))
    os.replace(quant, path)
    os.replace(sidecar, path.with_suffix(".json"))
    return path, meta


class ShortestEdge:
    """open_clip's eval transform for its default resize mode ("shortest", square output),
    on PIL and numpy alone: resize the shorter side as torchvision's Resize does on a PIL image
    (PIL's own resampling), centre-crop as CenterCrop does, scale to [0, 1], normalise. Equal
    to open_clip's transform (tests/test_int8.py) without importing open_clip and torchvision
    (about 3 s of start-up)."""

    FILTERS = {"bicubic": 3, "bilinear": 2, "nearest": 0, "lanczos": 1}  # PIL's numbers

    def __init__(self, size: int, mean, std, interpolation: str):
        import numpy as np

        self.size, self.resample = size, self.FILTERS[interpolation]
        self.mean = np.asarray(mean, dtype=np.float32)[:, None, None]
        self.std = np.asarray(std, dtype=np.float32)[:, None, None]

    def __call__(self, img):
        import numpy as np
        import torch

        w, h = img.size
        short, long = (w, h) if w <= h else (h, w)
        new_long = int(self.size * long / short)
        if short != self.size or new_long != long:
            img = img.resize((self.size, new_long) if w <= h else (new_long, self.size),
                             self.resample)
        w, h = img.size
        top, left = int(round((h - self.size) / 2.0)), int(round((w - self.size) / 2.0))
        img = img.convert("RGB").crop((left, top, left + self.size, top + self.size))
        x = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0
        return torch.from_numpy((x - self.mean) / self.std)


def shortest_edge(cfg: dict) -> ShortestEdge | None:
    """ShortestEdge for an open_clip preprocessing config it reproduces exactly (the
    "shortest" resize to a square, RGB); None for any other."""
    size = cfg.get("size")
    size = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
    if (cfg.get("resize_mode", "shortest") == "shortest" and size[0] == size[1]
            and cfg.get("interpolation", "bicubic") in ShortestEdge.FILTERS
            and cfg.get("mode", "RGB") == "RGB"):
        return ShortestEdge(size[0], cfg["mean"], cfg["std"], cfg.get("interpolation", "bicubic"))
    return None


def transform(meta: dict):
    """The model's eval transform from the sidecar's preprocessing (no model needed)."""
    cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["preprocess"].items()}
    found = shortest_edge(cfg)
    if found is not None:
        return found
    from open_clip.transform import PreprocessCfg, image_transform_v2

    return image_transform_v2(PreprocessCfg(**cfg), is_train=False)
