"""Decode → encode → journal: the batch loop shared by `embed` and `embed --views`.

Images are decoded and preprocessed in DataLoader worker processes, so that JPEG decoding and
resizing overlap the forward pass; the decoded tensors, not PIL images, cross the process
boundary. Each model batch goes straight to a sink that journals it, so a killed run loses at
most the batch in flight.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from mdclust.core.images import load_rgb

# sink(indices of the decoded items, their unit vectors (n, d) or (n, V, d), or None when no
# item of the batch decoded, [(index, reason) of the items that did not decode])
Sink = Callable[[list[int], "np.ndarray | None", list[tuple[int, str]]], None]


class DecodeDataset:
    """(index, pixels or None, failure reason) per file, for torch's DataLoader.

    Subclasses override ``transform`` to make several tensors of one image (a leading axis V).
    """

    def __init__(self, files: list[Path], preprocess):
        self.files = files
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.files)

    def transform(self, i: int, img) -> Any:
        return self.preprocess(img)

    def __getitem__(self, i: int):
        try:
            img = load_rgb(self.files[i])
        except ValueError as exc:
            return i, None, str(exc)
        return i, self.transform(i, img), ""


def _collate(items):
    import torch

    ok = [(i, t) for i, t, _ in items if t is not None]
    bad = [(i, r) for i, t, r in items if t is None]
    pixels = torch.stack([t for _, t in ok]) if ok else None
    return [i for i, _ in ok], pixels, bad


def _encode(encoder, pixels) -> np.ndarray:
    if pixels.dim() == 5:  # (n, V, 3, H, W): the V views of each image share one forward
        n, views = pixels.shape[:2]
        return encoder.encode_images(pixels.flatten(0, 1)).reshape(n, views, -1)
    return encoder.encode_images(pixels)


def decoding(dataset: DecodeDataset, *, batch_size: int, workers: int, device: str):
    """The decoded batches of ``dataset``; with workers, they start decoding now (before the
    model is built, when the caller knows its preprocessing: core/preprocess_cache.py)."""
    from torch.utils.data import DataLoader

    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                        collate_fn=_collate, pin_memory=device.startswith("cuda"),
                        prefetch_factor=4 if workers else None, persistent_workers=False)
    return iter(loader)


def encode_batches(encoder, dataset: DecodeDataset, sink: Sink, *, batch_size: int,
                   workers: int, bar=None, label: str = "encoding", batches=None) -> None:
    """Decode ``dataset`` in ``workers`` processes (0: inline), encode each batch of
    ``batch_size`` items on ``encoder`` and hand it to ``sink``; ``bar`` (a progress bar from
    mdclust.core.progress, or None) advances by the items of each batch, decoded or not.
    ``batches``: the same batches already started by ``decoding``."""
    if batches is None:
        batches = decoding(dataset, batch_size=batch_size, workers=workers,
                           device=encoder.device)
    task = bar.add_task(label, total=len(dataset)) if bar is not None else None
    for idx, pixels, bad in batches:
        sink(idx, _encode(encoder, pixels) if pixels is not None else None, bad)
        if task is not None:
            bar.advance(task, len(idx) + len(bad))
