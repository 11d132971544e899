"""Issue 22, items 1-6, 10, 12: no command deletes, undoes or hides another's data."""

import json
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
from conftest import MDCLUST, embedded_store, write_images

import mdclust.core.store as store_mod
from mdclust.core.store import Store, data_files

# Every group above this many bytes goes to a data file, so a 12-image store has several.
DATA_FILE_MIN = "64"


def run(*args, env=None, **kw):
    return subprocess.run([MDCLUST, *map(str, args)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})}, **kw)


def error_line(res) -> str:
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mdclust: error: "), res.stderr
    return lines[0]


@pytest.fixture
def filed(tmp_path, monkeypatch):
    """A real 12-image store whose groups are data files (here and in subprocesses)."""
    monkeypatch.setenv("MDCLUST_DATA_FILE_MIN_BYTES", DATA_FILE_MIN)
    monkeypatch.setattr(store_mod, "EXTERNAL_MIN_BYTES", int(DATA_FILE_MIN))
    st = embedded_store(tmp_path, 12)
    assert run("cluster", "--method", "kmeans", "--k", "2", "--store", st.path).returncode == 0
    with h5py.File(st.path, "r") as f:
        assert len(data_files(f)) >= 2  # images and features at least
    return st


def everything(path) -> dict:
    """Every dataset of a store as bytes, read through its links (what a reader sees)."""
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()].tobytes())
                     if isinstance(obj, h5py.Dataset) else None)
    return out


def files_bytes(folder) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.h5"))}


def commit_twice(st):
    for k in ("3", "2"):  # each replaces the clustering's data file
        res = run("cluster", "--method", "kmeans", "--k", k, "--store", st.path, "--quiet")
        assert res.returncode == 0, res.stderr


# -- 1. one store's clean-up never deletes another store's data files -----------------------

def test_a_new_store_under_a_moved_stores_name_leaves_its_data_alone(filed, tmp_path):
    old = tmp_path / "old.h5"
    filed.path.rename(old)
    before = everything(old)
    write_images(tmp_path / "more", 6, seed=3, size=(24, 24), prefix="m")
    res = run("embed", tmp_path / "more", "--model", "mdclust-test-tiny", "--pretrained",
              "random", "--workers", "0", "--store", filed.path, "--quiet")
    assert res.returncode == 0, res.stderr
    commit_twice(filed)
    assert everything(old) == before  # was: OSError, its data files deleted by s.h5's commit
    assert run("cluster", "--method", "kmeans", "--k", "3", "--store", old).returncode == 0
    assert run("info", "--store", filed.path).returncode == 0
    assert Store(old).read_group("clusterings/kmeans")["label"].max() == 2


def test_a_copy_of_the_entry_file_beside_it_keeps_working(filed, tmp_path):
    backup = tmp_path / "backup.h5"
    shutil.copy(filed.path, backup)
    before = everything(backup)
    commit_twice(filed)
    commit_twice(filed)
    assert everything(backup) == before  # was: its links pointed at deleted files
    # the copy's own commits take a new id: they never delete what the original links to
    original = everything(filed.path)
    commit_twice(Store(backup))
    assert everything(filed.path) == original
    ids = {Store(p).attrs("/")["mdclust_store_id"] for p in (filed.path, backup)}
    assert len(ids) == 2


def test_a_store_kept_inside_the_data_folder_is_not_deleted(filed):
    inner = Store(filed.data_dir / "inner.h5")
    with inner.transaction() as txn:
        txn.put_group("features/x", {"vectors": np.arange(100, dtype=np.float32)})
    before = everything(inner.path)
    commit_twice(filed)
    assert inner.path.exists() and everything(inner.path) == before


def test_an_entry_file_copied_without_its_data_folder_fails_at_once(filed, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(filed.path, elsewhere / "s.h5")
    for args in (["info"], ["cluster", "--method", "kmeans", "--k", "2"]):
        res = run(*args, "--store", elsewhere / "s.h5", cwd=tmp_path)  # cwd: HDF5's fallback
        assert res.returncode == 2
        assert "without its data folder" in error_line(res)


def test_a_pair_renamed_together_says_to_rename_the_folder_back(filed, tmp_path):
    filed.path.rename(tmp_path / "t.h5")
    filed.data_dir.rename(tmp_path / "t.h5.data")
    res = run("info", "--store", tmp_path / "t.h5")
    line = error_line(res)
    assert res.returncode == 2 and "renamed as a pair" in line and "s.h5.data" in line
    assert "embed again" not in line


# -- 2. a symbolic link to a store is followed ----------------------------------------------

def test_a_store_reached_through_a_symlink_is_updated_in_place(filed, tmp_path):
    link = tmp_path / "link.h5"
    link.symlink_to(filed.path)
    res = run("cluster", "--method", "kmeans", "--k", "3", "--store", link, "--quiet")
    assert res.returncode == 0, res.stderr
    assert link.is_symlink()  # was: replaced by a regular file whose links point nowhere
    assert Store(filed.path).read_group("clusterings/kmeans")["label"].max() == 2
    dangling = tmp_path / "dangling.h5"
    dangling.symlink_to(tmp_path / "nowhere" / "s.h5")
    res = run("cluster", "--method", "kmeans", "--k", "2", "--store", dangling)
    assert res.returncode == 2 and "symbolic link" in error_line(res)
    assert not (tmp_path / "nowhere").exists()


# -- 3. two handles in one process never undo each other ------------------------------------

def test_a_second_handle_inside_a_transaction_joins_it(filed):
    import mdclust

    s1, s2 = Store(filed.path), Store(filed.path)
    with s1.transaction() as txn:
        txn.put_group("notes/outer", {"v": np.arange(3)})
        res = mdclust.cluster(s2, method="kmeans", k=3)
        with s1.transaction() as inner:
            inner.put_group("notes/inner", {"v": np.arange(4)})
    stored = Store(filed.path).read_group("clusterings/kmeans")
    assert list(stored["label"]) == list(res.labels) and stored["label"].max() == 2
    assert Store(filed.path).read_group("notes/inner")["v"].tolist() == [0, 1, 2, 3]
    assert Store(filed.path).read_group("notes/outer")["v"].tolist() == [0, 1, 2]
    with pytest.raises(RuntimeError):  # a failed outer transaction takes the joined one along
        with s1.transaction() as txn:
            with s2.transaction() as inner:
                inner.put_group("notes/lost", {"v": np.arange(2)})
            raise RuntimeError("boom")
    assert Store(filed.path).read_group("notes/lost") is None


def test_another_thread_waits_for_the_lock_instead_of_joining(filed):
    import threading

    order = []
    s1, s2 = Store(filed.path), Store(filed.path)

    def second():
        with s2.transaction() as txn:
            order.append("second")
            txn.put_group("notes/b", {"v": np.arange(2)})

    with s1.transaction() as txn:
        t = threading.Thread(target=second)
        t.start()
        t.join(1.0)
        assert t.is_alive()  # it waits on the flock
        order.append("first")
        txn.put_group("notes/a", {"v": np.arange(1)})
    t.join(30)
    assert order == ["first", "second"]
    assert Store(filed.path).read_group("notes/a") and Store(filed.path).read_group("notes/b")


# -- 4. a failed candidates leaves the store as it was ---------------------------------------

def test_a_failed_candidates_changes_nothing(filed, tmp_path):
    words = tmp_path / "w.txt"
    words.write_text("red\ngreen\nblue\n")
    before = filed.path.read_bytes()
    for extra in (["--template", "no placeholder"], ["--model", "nosuch"]):
        res = run("candidates", "--interest", "color", "--from-file", words, *extra,
                  "--store", filed.path)
        assert res.returncode == 2, res.stderr
        error_line(res)
        assert filed.path.read_bytes() == before, extra
    with h5py.File(filed.path, "r") as f:
        key = list(f["features"])[0]
        link = f["features"].get(key, getlink=True)
    (filed.path.parent / link.filename).unlink()
    res = run("candidates", "--interest", "color", "--from-file", words, "--store", filed.path)
    assert res.returncode == 2
    assert "is missing" in error_line(res) and link.filename in res.stderr
    assert filed.path.read_bytes() == before


# -- 5. a killed text-cache merge is finished by the next write ------------------------------

KILL_AT_MERGE = """
import os, sys
import mdclust.core.store as m
real = m.Store.transaction
def transaction(self):
    if self.journal_dir.is_dir() and list(self.journal_dir.glob("*.npz")):
        os.kill(os.getpid(), 9)  # kill -9 at the commit that merges the text batches
    return real(self)
m.Store.transaction = transaction
from mdclust.cli import main
sys.argv = ["mdclust"] + sys.argv[1:]
main()
"""


def test_a_killed_text_merge_is_finished_by_the_next_write(filed, tmp_path):
    words = tmp_path / "w.txt"
    words.write_text("\n".join(f"word{i}" for i in range(30)))
    args = ["candidates", "--interest", "thing", "--from-file", words, "--store", filed.path]
    killed = subprocess.run([sys.executable, "-c", KILL_AT_MERGE, *map(str, args)],
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9
    assert list(filed.journal_dir.glob("*.npz"))  # the encoded batches, not yet merged
    again = run(*args, "--json")
    assert again.returncode == 0, again.stderr
    info = json.loads(run("info", "--json", "--store", filed.path).stdout)
    assert info["pending_journal_batches"] == 0  # was: 1 pending forever
    st = Store(filed.path)
    key = st.children("text_features")[0]
    group = st.read_group(f"text_features/{key}/{st.children(f'text_features/{key}')[0]}")
    assert sorted(group["text"]) == sorted(f"word{i}" for i in range(30))
    assert st.read_group("interests/thing/candidates")["word"][0] == "word0"


def test_pending_text_batches_are_merged_by_any_write(filed, tmp_path):
    import mdclust
    from mdclust.core.textcache import text_features

    vecs = text_features(filed, ["apple", "pear"], commit=False)  # as a killed merge leaves
    assert list(filed.journal_dir.glob("*.npz"))
    mdclust.cluster(filed, method="kmeans", k=2)  # an unrelated write
    assert not filed.journal_dir.exists()
    again = text_features(filed, ["apple", "pear"], stats=(stats := {}))
    assert stats["encoded"] == 0 and np.allclose(again, vecs)


def test_a_lost_text_cache_file_is_encoded_again(filed, tmp_path):
    from mdclust.core.textcache import text_features

    first = text_features(filed, [f"w{i}" for i in range(40)])
    with h5py.File(filed.path, "r") as f:
        lost = [n for n in data_files(f) if "/text_features." in n]
    assert lost
    (filed.path.parent / lost[0]).unlink()
    again = text_features(filed, [f"w{i}" for i in range(40)], stats=(stats := {}))
    assert stats["encoded"] == 40 and np.allclose(first, again, atol=1e-3)


# -- 6. damaged bytes in a data file are found, not clustered --------------------------------

def _features_file(st):
    with h5py.File(st.path, "r") as f:
        key = list(f["features"])[0]
        return st.path.parent / f["features"].get(key, getlink=True).filename, key


def test_damaged_feature_bytes_are_one_line_naming_the_file(filed):
    file, key = _features_file(filed)
    with h5py.File(file, "r") as f:
        info = f["group/vectors"].id.get_chunk_info(0)
    data = bytearray(file.read_bytes())
    for i in range(info.byte_offset, info.byte_offset + min(4096, info.size)):
        data[i] ^= 0x5A
    file.write_bytes(bytes(data))
    labels = filed.path.parent / "labels.csv"
    labels.write_text("path,thing\n" + "".join(
        f"{p},{i % 2}\n" for i, p in enumerate(Store(filed.path).read_group("images")["path"])))
    for args in (["cluster", "--method", "kmeans", "--k", "2"],
                 ["eval", "--method", "kmeans", "--labels", labels]):
        res = run(*args, "--store", filed.path)
        assert res.returncode == 2, (args, res.stderr[-400:])
        line = error_line(res)
        assert file.name in line and "damaged" in line and "Warning" not in res.stderr


def test_non_finite_features_are_refused(filed):
    file, _ = _features_file(filed)
    with h5py.File(file, "r+") as f:
        f["group/vectors"][3] = np.nan  # HDF5 writes a valid checksum: the value is the fault
    res = run("cluster", "--method", "kmeans", "--k", "2", "--store", filed.path)
    assert res.returncode == 2
    line = error_line(res)
    assert "non-finite" in line and file.name in line


# -- 10. a read-only store of an older schema is read as it is -------------------------------

def test_a_read_only_schema_1_store_is_read_as_it_is(tmp_path):
    from pathlib import Path

    path = tmp_path / "old.h5"
    shutil.copy(Path(__file__).parent / "data" / "store_v1.h5", path)
    os.chmod(path, 0o444)
    before = path.read_bytes()
    for args in (["info", "--json"], ["eval", "--interest", "color", "--method", "gradnorm",
                                      "--runs", "2", "--json"],
                 ["export", "--interest", "color", "--method", "gradnorm"]):
        res = run(*args, "--store", path)
        assert res.returncode == 0, (args, res.stderr)
    assert json.loads(run("info", "--json", "--store", path).stdout)["images"] == 10
    assert path.read_bytes() == before


# -- 12. a missing data file is named, with the real way out ---------------------------------

def test_a_missing_features_file_gives_the_same_way_out_everywhere(filed, tmp_path):
    file, _ = _features_file(filed)
    file.unlink()
    lines = []
    for args in (["cluster", "--method", "kmeans", "--k", "2"],
                 ["embed", filed.path.parent / "imgs", "--model", "mdclust-test-tiny",
                  "--pretrained", "random", "--workers", "0"]):
        res = run(*args, "--store", filed.path)
        assert res.returncode == 2
        lines.append(error_line(res))
    for line in lines:
        assert file.name in line and "is missing" in line and "into a new store" in line
        assert "rerun embed" not in line


def test_a_missing_clustering_input_is_named_at_once_and_its_stage_remakes_it(filed, tmp_path):
    import time

    words = tmp_path / "w.txt"
    words.write_text("\n".join(f"word{i}" for i in range(20)))
    for args in (["candidates", "--interest", "thing", "--from-file", words, "--k", "2"],
                 ["filter", "--interest", "thing", "--k", "2"],
                 ["cluster", "--interest", "thing", "--method", "gradnorm"]):
        res = run(*args, "--store", filed.path, "--quiet")
        assert res.returncode == 0, (args, res.stderr)
    with h5py.File(filed.path, "r") as f:
        gone = [n for n in data_files(f) if ".filter." in n]
    assert gone
    (filed.path.parent / gone[0]).unlink()
    t0 = time.monotonic()
    res = run("cluster", "--interest", "thing", "--method", "gradnorm", "--store", filed.path)
    assert res.returncode == 2 and time.monotonic() - t0 < 30
    line = error_line(res)
    assert gone[0] in line and "mdclust filter" in line and "internal error" not in line
    assert run("filter", "--interest", "thing", "--k", "2", "--store",
               filed.path).returncode == 0
    res = run("cluster", "--interest", "thing", "--method", "gradnorm", "--store", filed.path)
    assert res.returncode == 0, res.stderr
