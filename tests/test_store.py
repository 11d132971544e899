import hashlib
import signal
import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np
import pytest

from mdclust.core.errors import MdclustError
from mdclust.core.store import SCHEMA_ATTR, SCHEMA_VERSION, Store


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_roundtrip_with_provenance(store_path):
    st = Store(store_path)
    with st.transaction() as txn:
        txn.put_group("interests/color/candidates",
                      {"word": ["red", "blue", "vert clair"], "score": np.array([0.5, 0.25, 1.0])},
                      {"source": "wordnet", "params": {"k": 3, "n": [1, 2]}})
    g = st.read_group("interests/color/candidates")
    assert g["word"] == ["red", "blue", "vert clair"]
    np.testing.assert_allclose(g["score"], [0.5, 0.25, 1.0])
    assert g.attrs["params"] == {"k": 3, "n": [1, 2]}
    assert g.attrs["source"] == "wordnet"
    assert g.attrs["mdclust_version"] and g.attrs["time"]
    assert st.attrs("/")[SCHEMA_ATTR] == SCHEMA_VERSION


def test_read_group_can_skip_datasets_it_does_not_need(store_path):
    """export, load_clustering and report read a clustering's labels, not its features."""
    st = Store(store_path)
    big = np.ones((4096, 128), dtype=np.float16)  # over 1 MiB: its own data file
    with st.transaction() as txn:
        txn.put_group("clusterings/x", {"path": ["a", "b"], "label": np.array([1, 0]),
                                        "text_counterpart": big}, {"method": "x"})
    g = st.read_group("clusterings/x", only=("path", "label", "cluster_name"))
    assert sorted(g.data) == ["label", "path"] and g["path"] == ["a", "b"]
    assert g.attrs["method"] == "x"
    assert sorted(st.read_group("clusterings/x").data) == ["label", "path", "text_counterpart"]


def test_put_replaces_only_its_own_group(store_path):
    st = Store(store_path)
    with st.transaction() as txn:
        txn.put_group("interests/color/a", {"x": np.arange(3)})
        txn.put_group("interests/color/b", {"x": np.arange(4)})
        txn.put_group("images", {"path": ["p"]}, {"root": "/r"})
    with st.transaction() as txn:
        txn.put_group("interests/color/a", {"y": np.arange(5)})
    assert st.children("interests/color") == ["a", "b"]
    assert "x" not in st.read_group("interests/color/a").data
    assert list(st.read_group("interests/color/b")["x"]) == [0, 1, 2, 3]
    assert st.read_group("images").attrs["root"] == "/r"
    with st.transaction() as txn:
        txn.delete("interests/color/b")
    assert st.children("interests/color") == ["a"]


def test_failed_transaction_leaves_file_untouched(store_path):
    st = Store(store_path)
    with st.transaction() as txn:
        txn.put_group("g", {"v": np.arange(10)})
    before = digest(store_path)
    with pytest.raises(RuntimeError):
        with st.transaction() as txn:
            txn.put_group("g", {"v": np.arange(99)})
            raise RuntimeError("boom")
    assert digest(store_path) == before
    assert not list(store_path.parent.glob(".*tmp*"))


def test_rejects_files_that_are_not_stores(tmp_path):
    text = tmp_path / "notes.h5"
    text.write_text("hello")
    with pytest.raises(MdclustError, match="not an mdclust store"):
        Store(text).validate()
    with pytest.raises(MdclustError, match="not an mdclust store"):
        with Store(text).transaction() as txn:
            txn.put_group("g", {"v": np.arange(2)})
    assert text.read_text() == "hello"

    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(MdclustError, match="no schema attribute"):
        Store(foreign).validate()

    newer = tmp_path / "newer.h5"
    with h5py.File(newer, "w") as f:
        f.attrs[SCHEMA_ATTR] = SCHEMA_VERSION + 1
    with pytest.raises(MdclustError, match="newer"):
        Store(newer).read_group("images")


WRITER = textwrap.dedent("""
    import sys, numpy as np
    from mdclust.core.store import Store
    st = Store(sys.argv[1])
    i = 0
    while True:
        i += 1
        with st.transaction() as txn:
            txn.put_group("a", {"v": np.full(300_000, i, dtype=np.int64)}, {"i": i})
            txn.put_group("b", {"v": np.full(1000, i, dtype=np.int64)}, {"i": i})
        print(i, flush=True)
""")


def test_sigkill_during_commits_never_corrupts(store_path):
    """Kill a writer at several points mid-commit: the store is always a complete earlier state."""
    seen = 0
    for delay in (0.8, 1.1, 1.37, 1.6):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(store_path)],
                                stdout=subprocess.PIPE, text=True)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if not store_path.exists():
            continue
        st = Store(store_path)
        a, b = st.read_group("a"), st.read_group("b")
        i = a.attrs["i"]
        assert b.attrs["i"] == i
        assert (a["v"] == i).all() and (b["v"] == i).all()
        seen += 1
    assert seen >= 2
    with Store(store_path).transaction() as txn:  # the next commit clears killed temp files
        txn.put_group("c", {"v": np.arange(2)})
    assert [p.name for p in store_path.parent.iterdir()
            if p.name.startswith(f".{store_path.name}")] == []


def test_older_schema_is_upgraded_by_its_migration(store_path, monkeypatch):
    import mdclust.core.store as store_mod

    with Store(store_path).transaction() as txn:
        txn.put_group("images", {"path": ["a.png"]})

    def rename_images(txn):  # a made-up step from schema 3 to 4
        g = txn.read_group("images")
        txn.put_group("pictures", dict(g.data), provenance=False)
        txn.delete("images")

    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", 4)
    monkeypatch.setattr(store_mod, "MIGRATIONS", {3: rename_images})
    st = Store(store_path)
    st.validate()
    assert st.attrs("/")[SCHEMA_ATTR] == 4
    assert st.read_group("pictures")["path"] == ["a.png"] and st.read_group("images") is None
    monkeypatch.setattr(store_mod, "MIGRATIONS", {})
    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", 5)
    with pytest.raises(MdclustError, match="no upgrade from store schema 4"):
        st.validate()


# -- writes cost what they write: large groups in data files linked from the entry file -----

def big(n=300_000):  # 1.2 MB of float32: above EXTERNAL_MIN_BYTES
    return np.arange(n, dtype=np.float32)


def test_large_groups_live_in_data_files_that_later_commits_do_not_copy(store_path, tmp_path,
                                                                         monkeypatch):
    st = Store(store_path)
    with st.transaction() as txn:
        txn.put_group("features/m", {"vectors": big()}, {"dim": 1})
        txn.put_group("interests/c/candidates", {"word": ["red"]})
    files = sorted(st.data_dir.glob("*.h5"))
    assert len(files) == 1 and files[0].name.startswith("features.m.")
    assert store_path.stat().st_size < 100_000  # the entry file holds links, not the array
    stamp = files[0].stat().st_mtime_ns
    with st.transaction() as txn:  # a small commit: the data file is neither read nor copied
        txn.put_group("clusterings/kmeans", {"label": np.zeros(10, np.int32)})
    assert st.last_commit["data_files_written"] == 0
    assert st.last_commit["bytes_written"] == store_path.stat().st_size < 100_000
    assert sorted(st.data_dir.glob("*.h5")) == files and files[0].stat().st_mtime_ns == stamp
    # any HDF5 reader opens the entry file and follows the link, from any working directory
    monkeypatch.chdir(tmp_path)
    with h5py.File(store_path, "r") as f:
        np.testing.assert_array_equal(f["features/m/vectors"][()], big())
        assert f["features/m"].attrs["dim"] == 1
        assert isinstance(f["features"].get("m", getlink=True), h5py.ExternalLink)
    assert st.read_group("features/m").attrs["dim"] == 1


def test_replaced_data_files_are_removed_one_commit_later(store_path):
    st = Store(store_path)
    with st.transaction() as txn:
        txn.put_group("features/m", {"vectors": big()})
    first = {p.name for p in st.data_dir.glob("*.h5")}
    sid = st.attrs("/")["mdclust_store_id"]
    orphan = st.data_dir / f"features.m.{sid}.0123456789ab.h5"  # what a killed commit leaves
    orphan.write_bytes(b"partial")
    with st.transaction() as txn:
        txn.put_group("features/m", {"vectors": big() + 1})
    second = {p.name for p in st.data_dir.glob("*.h5")}
    assert first < second and len(second) == 2  # the replaced file stays for readers in flight
    assert not orphan.exists()
    with st.transaction() as txn:
        txn.put_group("x", {"v": np.arange(3)})
    assert {p.name for p in st.data_dir.glob("*.h5")} == second - first
    np.testing.assert_array_equal(st.read_group("features/m")["vectors"], big() + 1)
    with st.transaction() as txn:
        txn.delete("features/m")
    with st.transaction() as txn:
        txn.put_group("x", {"v": np.arange(4)})
    assert list(st.data_dir.glob("*.h5")) == []


def test_a_store_of_the_previous_layout_opens_and_is_upgraded(tmp_path, monkeypatch):
    """tests/data/store_v1.h5 was written by mdclust before data files (schema 1): embed with
    labels, candidates, filter, gradnorm and kmeans clusterings, all inside one file."""
    import shutil
    from pathlib import Path

    import mdclust
    import mdclust.core.store as store_mod

    path = tmp_path / "old.h5"
    shutil.copy(Path(__file__).parent / "data" / "store_v1.h5", path)
    with h5py.File(path, "r") as f:
        assert int(f.attrs[SCHEMA_ATTR]) == 1
        before = {"features": f["features"][list(f["features"])[0]]["vectors"][()],
                  "labels": f["interests/color/clusterings/gradnorm/label"][()]}
    assert mdclust.info(path).images == 10  # read as it is (info upgrades it on the way)
    # everything counts as large here, so the upgrade's commit moves every data group out
    monkeypatch.setattr(store_mod, "EXTERNAL_MIN_BYTES", 1)
    st = Store(path)
    st.upgrade()
    assert st.attrs("/")[SCHEMA_ATTR] == SCHEMA_VERSION == 3
    names = {p.name.split(".")[0] for p in st.data_dir.glob("*.h5")}
    assert {"images", "features", "labels", "interests"} <= names
    after = mdclust.load_clustering(path, "color", method="gradnorm")
    np.testing.assert_array_equal(after.labels, before["labels"])
    key = mdclust.info(path).models[0]
    np.testing.assert_array_equal(st.read_group(f"features/{key}")["vectors"], before["features"])
    assert mdclust.evaluate(path, "color", method="gradnorm", runs=2).n == 10
    mdclust.cluster(path, method="kmeans", k=3)
    assert sorted(mdclust.load_clustering(path, method="kmeans").sizes) != []


def test_a_schema_2_store_adopts_its_own_data_files_and_no_others(tmp_path):
    """tests/data/store_v2.h5 (+ .data) was written by mdclust 0.2 (data files without owner
    ids): embed of 8 images and a kmeans clustering, all three groups data files."""
    import shutil
    from pathlib import Path

    import mdclust

    data = Path(__file__).parent / "data"
    path = tmp_path / "store_v2.h5"
    shutil.copy(data / "store_v2.h5", path)
    shutil.copytree(data / "store_v2.h5.data", tmp_path / "store_v2.h5.data")
    legacy = sorted(p.name for p in (tmp_path / "store_v2.h5.data").glob("*.h5"))
    assert len(legacy) == 3
    foreign = tmp_path / "store_v2.h5.data" / "features.other.0123456789ab.h5"
    shutil.copy(tmp_path / "store_v2.h5.data" / legacy[0], foreign)  # another store's file
    st = Store(path)
    st.validate()
    attrs = st.attrs("/")
    assert attrs[SCHEMA_ATTR] == 3 and attrs["mdclust_entry"] == "store_v2.h5"
    assert sorted(attrs["mdclust_adopted"]) == legacy and len(attrs["mdclust_store_id"]) == 12
    old_clustering = next(n for n in legacy if n.startswith("clusterings."))
    mdclust.cluster(path, method="kmeans", k=3)
    mdclust.cluster(path, method="kmeans", k=2)  # the adopted clustering file is now unlinked
    left = {p.name for p in st.data_dir.glob("*.h5")}
    assert old_clustering not in left and foreign.name in left
    assert set(legacy) - {old_clustering} <= left  # images and features: still linked
    assert mdclust.info(path).images == 8 and sorted(mdclust.load_clustering(path).sizes)
