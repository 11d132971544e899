import os
import subprocess
import sys

import numpy as np

from mdclust.core import journal
from mdclust.core.store import Store


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_clear_removes_merged_batches_and_a_killed_writers_leftover(tmp_path):
    store = Store(tmp_path / "s.h5")
    a = journal.write_batch(store, "embed", x=np.arange(3))
    b = journal.write_batch(store, "embed", x=np.arange(4))
    assert [p.name for p in journal.batch_files(store, "embed")] == [a.name, b.name]
    dead = store.journal_dir / f".embed.1.abcd.npz.{_dead_pid()}.tmp"
    dead.write_bytes(b"half")
    journal.clear(store, [a, b])
    assert not store.journal_dir.exists()


def test_clear_keeps_a_live_writers_file_and_unmerged_batches(tmp_path):
    store = Store(tmp_path / "s.h5")
    a = journal.write_batch(store, "embed", x=np.arange(3))
    b = journal.write_batch(store, "embed", x=np.arange(5))
    live = store.journal_dir / f".embed.2.abcd.npz.{os.getpid()}.tmp"
    live.write_bytes(b"in flight")
    journal.clear(store, [a])
    assert live.exists() and b.exists() and not a.exists()
    [(path, arrays)] = journal.read_batches(store, "embed")
    assert path == b and arrays["x"].tolist() == [0, 1, 2, 3, 4]
