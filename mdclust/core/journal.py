"""Per-batch commits for long stages, between whole-store rewrites (docs/store.md).

Each batch is one .npz in ``<store>.journal/``, written under a temporary name, fsynced and
renamed, so a file there is either complete or absent. A stage merges its kind of batches into
the store in one transaction and then deletes them; a killed run leaves them for the next run.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from pathlib import Path
from typing import Protocol

import numpy as np

from mdclust.core.errors import MdclustError, MissingDataFile

APPEND = "append-"  # kinds of batches that any commit folds into the store (see append())


class Store(Protocol):
    """What this module needs of a Store: store.py folds pending append batches at every
    commit, so it imports this module, and this one cannot import it."""

    journal_dir: Path


def write_batch(store: Store, kind: str, **arrays: np.ndarray) -> Path:
    d = store.journal_dir
    d.mkdir(parents=True, exist_ok=True)
    name = f"{kind}.{time.time_ns():020d}.{uuid.uuid4().hex[:8]}.npz"
    tmp = d / f".{name}.{os.getpid()}.tmp"  # the pid lets clear() spot a dead writer's leftovers
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, d / name)
    except OSError as exc:  # disk full: the batches already journaled stay for a rerun
        tmp.unlink(missing_ok=True)
        raise MdclustError(f"cannot write to {d}: {exc.strerror or exc}; free space and rerun "
                           "the same command to resume") from exc
    return d / name


def batch_files(store: Store, kind: str | None = None) -> list[Path]:
    d = store.journal_dir
    if not d.is_dir():
        return []
    pattern = f"{kind}.*.npz" if kind else "*.npz"
    return sorted(d.glob(pattern), key=lambda p: p.name.split(".")[-3])


def read_batches(store: Store, kind: str) -> list[tuple[Path, dict[str, np.ndarray]]]:
    out = []
    for path in batch_files(store, kind):
        try:
            with np.load(path, allow_pickle=True) as z:
                out.append((path, {k: z[k] for k in z.files}))
        except Exception:
            continue  # unreadable means lost: that batch is simply computed again
    return out


def _writer_alive(tmp: Path) -> bool:
    try:
        os.kill(int(tmp.name.split(".")[-2]), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def clear(store: Store, files: list[Path]) -> None:
    """Delete merged batches, plus half-written ones whose writer was killed mid-write."""
    for p in files:
        p.unlink(missing_ok=True)
    if store.journal_dir.is_dir():
        for tmp in store.journal_dir.glob(".*.tmp"):
            if not _writer_alive(tmp):
                tmp.unlink(missing_ok=True)
    try:
        store.journal_dir.rmdir()  # only when empty
    except OSError:
        pass


def live_rows(shas: list[str], live: set[str]) -> list[int]:
    """Row indices to keep when merging batches: the first row of each content hash still in
    the store (a batch redone after a crash may repeat rows that were already committed)."""
    keep, seen = [], set()
    for i, s in enumerate(shas):
        if s in live and s not in seen:
            seen.add(s)
            keep.append(i)
    return keep


# -- append batches: rows for one group that any commit may fold in ------------------------

def append_kind(group: str) -> str:
    return APPEND + hashlib.sha256(group.encode()).hexdigest()[:12]


def append(store: Store, group: str, key: str, attrs: dict, **arrays: np.ndarray) -> Path:
    """Journal rows to be appended to ``group`` (rows whose ``key`` value the group already
    holds are dropped). The batch names its group, so every commit on the store, by any
    stage, folds pending batches in (Store.transaction): a merge that was killed or failed is
    done by the next write, whatever command makes it."""
    meta = {"group": group, "key": key, "attrs": attrs}
    return write_batch(store, append_kind(group), __meta__=np.array(json.dumps(meta)), **arrays)


def pending_appends(store: Store) -> dict[str, tuple[str, dict, list[tuple[Path, dict]]]]:
    """group -> (key column, attributes, [(file, arrays)]) for every pending append batch."""
    out: dict[str, tuple[str, dict, list]] = {}
    for path, batch in read_batches(store, APPEND + "*"):
        if "__meta__" not in batch:
            continue
        meta = json.loads(str(batch.pop("__meta__")))
        entry = out.setdefault(meta["group"], (meta["key"], {}, []))
        entry[1].update(meta["attrs"])  # a later batch's attributes add to an earlier one's
        entry[2].append((path, batch))
    return out


def fold(txn, store: Store) -> list[Path]:
    """Fold pending append batches into the transaction ``txn`` (Store.transaction calls this
    at every commit); returns their files, to delete once the commit is on disk. Rows whose
    key the group already holds are dropped."""
    files: list[Path] = []
    for group, (key, attrs, batches) in pending_appends(store).items():
        if txn.deleting(group):
            continue
        data = txn.pending(group)
        if data is None:
            try:
                old = txn.read_group(group)
            except MissingDataFile:
                old = None  # a lost cache group: the batches rebuild what they hold
            data = dict(old.data) if old is not None else {}
            # attributes a batch does not carry (one written by an older version) are kept
            attrs = {**(old.attrs if old is not None else {}), **attrs}
        columns = {name: [np.asarray(data[name])] if name in data else [] for name in
                   batches[0][1]}
        seen = {str(v) for v in data.get(key, [])}
        added = 0
        for path, batch in batches:
            files.append(path)
            keep = [i for i, v in enumerate(batch[key]) if str(v) not in seen]
            seen.update(str(batch[key][i]) for i in keep)
            added += len(keep)
            for name, values in batch.items():
                columns.setdefault(name, []).append(values[keep])
        if added:
            merged = {}
            for name, parts in columns.items():
                joined = np.concatenate(parts)
                merged[name] = [str(v) for v in joined] if joined.dtype.kind in "OUS" \
                    else joined
            txn.put_group(group, merged, attrs)
    return files
