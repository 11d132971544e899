"""Resumable training state: ``<store>.checkpoints/<method>-<hash>.pt``.

The file name is a hash of everything that defines a run (configuration, features, inputs), so
rerunning the same command finds its own checkpoint and a changed command starts afresh. Each
save goes to a temporary name, is fsynced and renamed: a file there is complete or absent.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from mdclust.core.store import Store


class Checkpoint:
    def __init__(self, store: Store, method: str, identity: dict):
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
        self.path: Path = store.path.with_name(store.path.name + ".checkpoints") / \
            f"{method}-{digest}.pt"

    def save(self, state: dict) -> None:
        import torch

        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        torch.save(state, tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def load(self, device: str) -> dict | None:
        """The saved state, or None when there is none or it cannot be read (a damaged
        checkpoint only costs the time to redo it)."""
        if not self.path.is_file():
            return None
        import torch

        try:
            return torch.load(self.path, weights_only=False, map_location=device)
        except Exception:
            return None

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
        try:
            self.path.parent.rmdir()  # only when empty
        except OSError:
            pass
