"""Augmented image views for `mdclust embed --views V` (read by `train --method pipcdr`).

Each image gets V randomly augmented copies, encoded with the same model as its features and
stored as ``views/<model key>/<augment set>`` (sha256, vectors (n, V, d) float16). The random
draw of view j of an image is seeded by (content hash, j), so a rerun, a resumed run or a copy
of the image gets the same views. Batches are journalled like the plain features.

The augmentation set is chosen per interest: colour jitter and grayscale destroy the colour
interest, crops can cut away a background, flips break left/right poses (docs/methods/pipcdr.md).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from mdclust.core import encode_runner, journal, layout
from mdclust.core.errors import MdclustError
from mdclust.core.store import Store, Transaction

JOURNAL_KIND = "views"
DEFAULT_AUGMENT = "crop,flip"


def _transforms(name: str, size: int):
    from torchvision import transforms as T

    return {
        "crop": T.RandomResizedCrop(size, scale=(0.5, 1.0)),
        "flip": T.RandomHorizontalFlip(),
        "rotate": T.RandomRotation(15),
        "jitter": T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        "gray": T.RandomGrayscale(p=0.2),
        "blur": T.RandomApply([T.GaussianBlur(3, sigma=(0.1, 2.0))], p=0.5),
    }[name]


AUGMENTATIONS = ("crop", "flip", "rotate", "jitter", "gray", "blur")


def parse_augment(spec: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(s.strip() for s in spec.split(",") if s.strip()))
    bad = [n for n in names if n not in AUGMENTATIONS]
    if bad or not names:
        raise MdclustError(f"unknown augmentation {', '.join(bad) or repr(spec)}: use a comma "
                           f"list of {', '.join(AUGMENTATIONS)}")
    return names


def set_name(names: tuple[str, ...]) -> str:
    return "+".join(names)


def _seed(sha: str, j: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{sha}:{j}".encode()).digest()[:8], "little") >> 1


class ViewDataset(encode_runner.DecodeDataset):
    """The V augmented views (V, 3, H, W) of each (sha, file) item, or None and a reason."""

    def __init__(self, items: list[tuple[str, Path]], names: tuple[str, ...], views: int,
                 size: int, preprocess):
        super().__init__([path for _, path in items], preprocess)
        self.shas = [sha for sha, _ in items]
        self.names, self.views, self.size = names, views, size

    def transform(self, i: int, img):
        import torch
        from torchvision import transforms as T

        aug = T.Compose([_transforms(n, self.size) for n in self.names])
        out = []
        for j in range(self.views):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(_seed(self.shas[i], j))
                out.append(self.preprocess(aug(img)))
        return torch.stack(out)


def stored(store: Store, key: str, names: tuple[str, ...], views: int) -> set[str]:
    """Content hashes whose V views are already stored or journalled."""
    done: set[str] = set()
    path = layout.views(key, set_name(names))
    g = store.read_group(path)
    if g is not None and g.attrs.get("views") == views:
        done.update(g["sha256"])
    for _, z in journal.read_batches(store, JOURNAL_KIND):
        if str(z["group"]) == path and z["vectors"].shape[1:2] == (views,):
            done.update(str(s) for s in z["sha"])
    return done


def run(store: Store, encoder, items: list[tuple[str, Path]], names: tuple[str, ...],
        views: int, batch_size: int, workers: int, bar=None) -> int:
    """Encode and journal the views of ``items`` (sha, file; see stored()); returns how many."""
    path = layout.views(encoder.spec.key, set_name(names))
    size = encoder.model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else int(size)

    def sink(idx, vecs, bad) -> None:
        # A file that does not decode is recorded as skipped by the features pass; it has no
        # views to keep.
        if idx:
            journal.write_batch(store, JOURNAL_KIND, group=np.array(path),
                                augment=np.array(set_name(names)), views=np.array(views),
                                sha=np.array([items[i][0] for i in idx], dtype="U64"),
                                vectors=vecs.astype(np.float16))

    # --batch-size counts tensors per forward pass, and each image brings V of them.
    dataset = ViewDataset(items, names, views, size, encoder.preprocess)
    encode_runner.encode_batches(encoder, dataset, sink, batch_size=max(1, batch_size // views),
                                 workers=workers, bar=bar,
                                 label=f"views ({set_name(names)} x{views})")
    return len(items)


def commit(txn: Transaction, store: Store, live: set[str]) -> list[Path]:
    """Merge journalled views into their groups, keeping only images still in the store."""
    batches = journal.read_batches(store, JOURNAL_KIND)
    paths = {str(z["group"]) for _, z in batches}
    for key in txn.children(layout.VIEWS):
        paths.update(layout.views(key, s) for s in txn.children(layout.views(key)))
    for path in sorted(paths):
        old = txn.read_group(path)
        new = [z for _, z in batches if str(z["group"]) == path]
        views = int(new[-1]["views"]) if new else int(old.attrs["views"])
        shas, vecs = [], []
        if old is not None and old.attrs.get("views") == views:
            shas, vecs = list(old["sha256"]), [old["vectors"]]
        for z in new:
            if z["vectors"].shape[1] == views:
                shas += [str(s) for s in z["sha"]]
                vecs.append(z["vectors"])
        keep = journal.live_rows(shas, live)
        if not keep:
            txn.delete(path)
            continue
        matrix = np.concatenate(vecs)[keep]
        txn.put_group(path, {"sha256": [shas[i] for i in keep],
                             "vectors": matrix.astype(np.float16)},
                      {"views": views, "augment": path.rsplit("/", 1)[1].split("+"),
                       "model_key": path.split("/")[1], "dim": int(matrix.shape[2])})
    return [p for p, _ in batches]


def available(store: Store, key: str) -> list[str]:
    return store.children(layout.views(key))


def load(store: Store, key: str, shas: list[str], which: str = "auto"
         ) -> tuple[str, np.ndarray] | None:
    """(set name, (n, V, d) float32 unit vectors in ``shas`` order) or None when no views are
    stored and ``which`` is "auto". ``which`` names a set ("crop+flip") or "auto" (the only one)."""
    sets = available(store, key)
    if which == "auto":
        if not sets:
            return None
        if len(sets) > 1:
            raise MdclustError(f"several view sets are stored for {key}: {', '.join(sets)}; "
                               "choose one with --views")
        which = sets[0]
    which = set_name(parse_augment(which.replace("+", ",")))
    if which not in sets:
        raise MdclustError(f"no {which} views for {key}; run `mdclust embed DIR --views V "
                           f"--augment {which.replace('+', ',')}` first"
                           + (f" (stored: {', '.join(sets)})" if sets else ""))
    g = store.read_group(layout.views(key, which))
    index = {s: i for i, s in enumerate(g["sha256"])}
    missing = [s for s in shas if s not in index]
    if missing:
        raise MdclustError(f"{len(missing)} images have no {which} views; rerun `mdclust embed "
                           f"DIR --views {g.attrs['views']} --augment {which.replace('+', ',')}`")
    out = g["vectors"][[index[s] for s in shas]].astype(np.float32)
    out /= np.linalg.norm(out, axis=-1, keepdims=True).clip(min=1e-12)
    return which, out
