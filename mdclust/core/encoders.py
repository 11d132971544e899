"""Loading open_clip models offline, and batched, normalised encoding.

torch and open_clip are imported inside functions: importing them costs seconds, and commands
such as ``mdclust info`` never need them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mdclust.core.errors import MdclustError
from mdclust.core.images import sha256_file

BUILTIN_CONFIG_DIR = Path(__file__).parents[1] / "data" / "model_configs"
# Weights that ship inside the package, used when --pretrained is not given.
DATA_DIR = Path(__file__).parents[1] / "data"
BUNDLED_WEIGHTS = {"mdclust-tiny": DATA_DIR / "weights" / "mdclust-tiny.pt"}
DEFAULT_TAG = "openai"
RANDOM_WEIGHTS = ("random", "none", "")
CONFIG_DIR_ENV = "MDCLUST_MODEL_CONFIGS"  # extra open_clip config folders, os.pathsep-separated


@dataclass(frozen=True)
class ModelSpec:
    """A model name plus where its weights come from; ``key`` names its features in the store."""

    model: str
    pretrained: str  # an open_clip tag, a local file path, or "random"
    weights_sha256: str = ""

    @property
    def is_file(self) -> bool:
        return bool(self.weights_sha256)

    @property
    def key(self) -> str:
        if self.is_file:
            source = f"file-{self.weights_sha256[:12]}"
        elif self.pretrained.lower() in RANDOM_WEIGHTS:
            source = "random"
        else:
            source = self.pretrained
        # '/' would nest HDF5 groups; hf-hub names contain it.
        return f"{self.model}@{source}".replace("/", "--")

    def attrs(self) -> dict[str, Any]:
        return {"model": self.model, "pretrained": self.pretrained,
                "weights_sha256": self.weights_sha256}


def model_spec(model: str, pretrained: str | None = None) -> ModelSpec:
    """Resolve the weights source without importing torch (cheap enough for every run).

    ``pretrained=None`` means the model's default: its bundled weights file if it has one
    (mdclust-tiny), else open_clip's "openai" tag.
    """
    if pretrained is None:
        bundled = BUNDLED_WEIGHTS.get(model)
        if bundled is not None and not bundled.is_file():
            raise MdclustError(f"the bundled weights of {model} are missing ({bundled}); "
                               "reinstall mdclust or run scripts/train_tiny_clip.py")
        pretrained = str(bundled) if bundled is not None else DEFAULT_TAG
    pretrained = str(pretrained)
    path = Path(pretrained).expanduser()
    looks_like_path = os.sep in pretrained or pretrained.endswith(
        (".pt", ".bin", ".safetensors", ".pth"))
    if path.is_file():
        return ModelSpec(model, str(path.resolve()), sha256_file(path))
    if looks_like_path:
        raise MdclustError(f"weights file not found: {pretrained}")
    if pretrained.lower() in RANDOM_WEIGHTS:
        pretrained = "random"
    return ModelSpec(model, pretrained)


def register_configs() -> None:
    """Make the bundled configs (e.g. mdclust-tiny) and those in $MDCLUST_MODEL_CONFIGS known."""
    import open_clip

    dirs = [BUILTIN_CONFIG_DIR] + [Path(p) for p in
                                   os.environ.get(CONFIG_DIR_ENV, "").split(os.pathsep) if p]
    known = set(open_clip.list_models())
    for d in dirs:
        if d.is_dir() and any(p.stem not in known for p in d.glob("*.json")):
            open_clip.add_model_config(d)


def resolve_device(device: str = "auto") -> str:
    import torch

    device = (device or "auto").lower()
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise MdclustError("--device cuda was asked for but no CUDA GPU is available")
    if device == "mps" and not (getattr(torch.backends, "mps", None)
                                and torch.backends.mps.is_available()):
        raise MdclustError("--device mps was asked for but MPS is not available")
    if device not in ("cpu", "cuda", "mps") and not device.startswith("cuda:"):
        raise MdclustError(f"unknown device {device!r}: use auto, cpu, cuda or mps")
    return device


def resolve_precision(precision: str, device: str) -> str:
    precision = (precision or "auto").lower()
    if precision == "auto":
        return "fp16" if device.startswith("cuda") else "fp32"
    if precision not in ("fp32", "fp16", "bf16"):
        raise MdclustError(f"unknown precision {precision!r}: use auto, fp32, fp16 or bf16")
    return precision


class ClipEncoder:
    """A frozen open_clip model with its preprocessing; counts forward passes."""

    def __init__(self, spec: ModelSpec, device: str = "auto", precision: str = "auto",
                 allow_download: bool = False):
        if not allow_download:
            # Read by huggingface_hub at import time: a missing file then fails at once
            # instead of waiting on a network that may not exist.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import open_clip
        import torch

        register_configs()
        self.spec = spec
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        if spec.model.replace("/", "-") not in open_clip.list_models() and ":" not in spec.model:
            raise MdclustError(f"unknown model {spec.model!r}; see `mdclust models` for the "
                               "known names, or add a config folder via $" + CONFIG_DIR_ENV)
        pretrained = None if spec.pretrained == "random" else spec.pretrained
        try:
            # Random weights must be the same in every run, or an incremental rerun would mix
            # features from two different networks.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                model, _, preprocess = open_clip.create_model_and_transforms(
                    spec.model, pretrained=pretrained, device=self.device)
        except Exception as exc:  # open_clip raises RuntimeError/ValueError/OSError variously
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if spec.is_file:
                raise MdclustError(f"cannot load weights {spec.pretrained} into {spec.model}: "
                                   f"{first}") from exc
            if "download" in first.lower() or "hub" in first.lower():
                raise MdclustError(
                    f"weights {spec.model}/{spec.pretrained} are not available offline; pass a "
                    "local file with --pretrained /path/to/open_clip_model.bin (or "
                    "--allow-download to fetch them)") from exc
            raise MdclustError(
                f"cannot load {spec.model}/{spec.pretrained}: {first[:200]}") from exc
        model.eval()
        self.model = model
        self.preprocess = preprocess
        self._torch = torch
        self.forwards = 0
        self.dim = int(model.text_projection.shape[-1]) if hasattr(model, "text_projection") \
            and model.text_projection is not None else None

    def _autocast(self):
        torch = self._torch
        if self.precision == "fp32":
            import contextlib
            return contextlib.nullcontext()
        dtype = torch.float16 if self.precision == "fp16" else torch.bfloat16
        return torch.autocast(device_type=self.device.split(":")[0], dtype=dtype)

    def encode_images(self, pixels) -> "Any":
        """Pixels (N, 3, H, W) tensor -> (N, D) float32 numpy array of unit vectors."""
        torch = self._torch
        with torch.inference_mode(), self._autocast():
            feats = self.model.encode_image(pixels.to(self.device, non_blocking=True))
            feats = torch.nn.functional.normalize(feats.float(), dim=-1)
        self.forwards += 1
        return feats.cpu().numpy()

    def tokenize(self, texts: list[str]):
        import open_clip

        if not hasattr(self, "_tokenizer"):
            self._tokenizer = open_clip.get_tokenizer(self.spec.model)
        return self._tokenizer(texts)

    def _text_forward(self, tokens):
        """encode_text, cut to the longest text in the batch when that is exact.

        With a causal attention mask and end-of-text pooling, the positions after a text's end
        token cannot influence its feature, so running 77 positions for a 10-token prompt only
        wastes time (about 5x for "A photo of a {}." prompts).
        """
        import open_clip

        model = self.model
        exact = (type(model) is open_clip.CLIP and getattr(model, "attn_mask", None) is not None
                 and getattr(model, "text_pool_type", "argmax") == "argmax")
        if not exact:
            return model.encode_text(tokens)
        from open_clip.transformer import text_global_pool

        n = int(tokens.argmax(dim=-1).max()) + 1
        tokens = tokens[:, :n]
        cast = model.transformer.get_cast_dtype()
        x = model.token_embedding(tokens).to(cast) + model.positional_embedding[:n].to(cast)
        x = model.transformer(x, attn_mask=model.attn_mask[:n, :n])
        x = text_global_pool(model.ln_final(x), tokens, "argmax")
        proj = model.text_projection
        if proj is None:
            return x
        return proj(x) if isinstance(proj, self._torch.nn.Linear) else x @ proj

    def encode_texts(self, texts: list[str], batch_size: int = 256) -> "Any":
        """Texts -> (N, D) float32 numpy array of unit vectors (batched by token length)."""
        import numpy as np

        torch = self._torch
        if not len(texts):
            return np.zeros((0, self.dim or 0), dtype=np.float32)
        tokens = self.tokenize(list(texts))
        order = np.argsort(tokens.argmax(dim=-1).numpy(), kind="stable")
        parts = []
        for i in range(0, len(texts), batch_size):
            idx = torch.from_numpy(order[i:i + batch_size])
            with torch.inference_mode(), self._autocast():
                feats = self._text_forward(tokens[idx].to(self.device))
                parts.append(torch.nn.functional.normalize(feats.float(), dim=-1).cpu().numpy())
            self.forwards += 1
        out = np.empty((len(texts), parts[0].shape[1]), dtype=np.float32)
        out[order] = np.concatenate(parts)
        return out
