"""The standing fault suite: hostile conditions a real user meets, each asserting the exit code,
a one-line error on stderr and that the store afterwards equals the store before."""

import csv
import http.server
import inspect
import io
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import MDCLUST, TINY, embedded_store, write_images

import mdclust
import mdclust.core.store as store_mod
from mdclust.core.errors import MdclustError
from mdclust.core.store import Store, data_files
from mdclust.stages.embed import embed


def run(*args, env=None, timeout=300, **kw):
    return subprocess.run([MDCLUST, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, **kw)


def error_line(res) -> str:
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mdclust: error: "), res.stderr
    return lines[0]


# Every group above this many bytes goes to a data file, so a 12-image store has several.
DATA_FILE_MIN = "64"


def everything(path) -> dict:
    """Every dataset of a store as bytes, read through its links (what a reader sees)."""
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()].tobytes())
                     if isinstance(obj, h5py.Dataset) else None)
    return out


@pytest.fixture
def small(tmp_path):
    return embedded_store(tmp_path, 12)


def test_rewrites_keep_the_store_private(small):
    os.chmod(small.path, 0o600)
    res = run("cluster", "--method", "kmeans", "--k", "2", "--store", small.path, "--quiet")
    assert res.returncode == 0, res.stderr
    assert small.read_group("clusterings/kmeans") is not None
    assert stat.S_IMODE(small.path.stat().st_mode) == 0o600  # was 644 after every rewrite


def test_a_read_only_store_is_refused_not_rewritten(small):
    os.chmod(small.path, 0o444)
    before = small.path.read_bytes()
    res = run("cluster", "--method", "kmeans", "--k", "2", "--store", small.path)
    assert res.returncode == 2
    assert "is read-only (mode 444)" in error_line(res)
    assert small.path.read_bytes() == before
    assert stat.S_IMODE(small.path.stat().st_mode) == 0o444


def test_a_held_lock_is_named_and_given_up_on(small):
    before = small.path.read_bytes()
    with small.lock():
        t0 = time.monotonic()
        res = run("cluster", "--method", "kmeans", "--k", "2", "--store", small.path,
                  env={"MDCLUST_LOCK_TIMEOUT": "3"})
        waited = time.monotonic() - t0
    assert res.returncode == 2 and 3 <= waited < 60
    note, err = res.stderr.strip().splitlines()
    assert note == f"mdclust: waiting for the lock on {small.path} held by PID {os.getpid()}"
    assert err.startswith("mdclust: error: the store") and "gave up after 3 s" in err
    assert small.path.read_bytes() == before
    bad = run("cluster", "--method", "kmeans", "--k", "2", "--store", small.path,
              env={"MDCLUST_LOCK_TIMEOUT": "soon"})
    assert bad.returncode == 2 and "MDCLUST_LOCK_TIMEOUT must be a number" in error_line(bad)


@pytest.mark.slow
def test_a_lock_released_in_time_lets_the_command_finish(small):
    holder = subprocess.Popen([os.sys.executable, "-c",
                               "import sys, time; from mdclust.core.store import Store; "
                               f"l = Store({str(small.path)!r}).lock(); l.__enter__(); "
                               "print('held', flush=True); time.sleep(8)"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    res = run("cluster", "--method", "kmeans", "--k", "2", "--store", small.path)
    holder.wait()
    assert res.returncode == 0, res.stderr
    assert "waiting for the lock" in res.stderr and "held by PID" in res.stderr


def _immutable(folder: Path, on: bool) -> bool:
    """A folder nobody, root included, may write in (chattr +i; ext4/xfs), if the system lets
    us make one: root ignores mode bits, so chmod 555 proves nothing in CI."""
    res = subprocess.run(["chattr", "+i" if on else "-i", str(folder)], capture_output=True)
    return res.returncode == 0


def test_a_read_only_folder_fails_before_any_encoding(tmp_path):
    images = tmp_path / "imgs"
    write_images(images, 30, size=(24, 24))
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        os.chmod(folder, 0o555)
    elif not _immutable(folder, True):
        pytest.skip("cannot make a read-only folder here (chattr +i failed)")
    try:
        t0 = time.monotonic()
        res = run("embed", images, "--model", TINY, "--pretrained", "random",
                  "--store", folder / "s.h5")
        assert res.returncode == 2
        assert "cannot write the store" in error_line(res)
        assert time.monotonic() - t0 < 30 and list(folder.iterdir()) == []
    finally:
        _immutable(folder, False)
        os.chmod(folder, 0o755)


def test_check_writable_is_quiet_for_a_new_store_in_a_new_folder(tmp_path):
    st = Store(tmp_path / "new" / "deeper" / "s.h5")
    st.check_writable()  # nothing to check yet: the first write creates the folder
    assert not (tmp_path / "new").exists()
    with st.transaction() as txn:
        txn.put_group("x", {"a": [1]})
    assert st.read_group("x") is not None
    os.chmod(st.path, 0o400)
    with pytest.raises(MdclustError, match="read-only"):
        with st.transaction() as txn:
            txn.put_group("y", {"a": [1]})


def test_usage_errors_are_one_line_with_exit_2(small):
    for args, text in ((["cluster", "--bogus"], "No such option: --bogus"),
                       (["cluster", "--k-max", "abc"], "Invalid value for '--k-max'"),
                       (["datasets", "shapes"], "Missing argument")):
        res = run(*args, "--store", small.path)
        assert res.returncode == 2 and res.stdout == ""
        assert text in error_line(res) and "--help`)" in error_line(res)
    assert run("--help").returncode == 0 and run("cluster", "--help").returncode == 0


def test_k_zero_and_k_above_the_images_are_refused(small, tmp_path):
    words = tmp_path / "w.txt"
    words.write_text("red\ngreen\nblue\n")
    res = run("candidates", "--interest", "color", "--from-file", words, "--k", "500",
              "--store", small.path)
    assert res.returncode == 2 and "--k 500 is more than the number of images (12)" in \
        error_line(res)
    assert small.read_group("interests/color/candidates") is None
    run("candidates", "--interest", "color", "--from-file", words, "--k", "2",
        "--store", small.path)
    before = small.path.read_bytes()
    res = run("train", "--interest", "color", "--k", "0", "--store", small.path)
    assert res.returncode == 2 and "--k must be at least 2" in error_line(res)
    assert small.path.read_bytes() == before


def test_eval_and_export_name_real_methods_and_export_warns_when_stale(small, tmp_path):
    res = run("eval", "--method", "foo", "--store", small.path)
    assert res.returncode == 2
    assert "unknown method 'foo': use kmeans, zeroshot" in error_line(res)
    assert run("cluster", "--method", "kmeans", "--k", "2", "--store", small.path).returncode == 0
    ok = run("export", "--method", "kmeans", "--store", small.path, "--json")
    data = __import__("json").loads(ok.stdout)
    assert ok.returncode == 0 and ok.stderr == "" and data["n"] == 12 == len(data["rows"])
    more = tmp_path / "more"
    write_images(more, 3, seed=5, size=(24, 24), prefix="new")
    for p in more.rglob("*.png"):
        p.rename(tmp_path / "imgs" / p.name)
    assert run("embed", tmp_path / "imgs", "--model", TINY, "--pretrained", "random",
               "--store", small.path, "--quiet").returncode == 0
    stale = run("export", "--method", "kmeans", "--store", small.path)
    assert stale.returncode == 0 and len(stale.stdout.splitlines()) == 13  # header + 12 rows
    assert stale.stderr.startswith("mdclust: warning: this clustering has 12 rows but the "
                                   "store now holds 15 images (3 not in it)")


def test_export_streams_into_a_file_atomically(small, tmp_path, monkeypatch):
    from mdclust.stages import evaluate

    mdclust = __import__("mdclust")
    mdclust.cluster(small, method="kmeans", k=2)
    text = mdclust.export_csv(small)
    monkeypatch.setattr(evaluate, "EXPORT_BLOCK", 5)  # 12 rows in three blocks
    target = tmp_path / "out.csv"
    assert mdclust.export_csv(small, out=target) == 12
    assert target.read_text() == text and text.count("\n") == 13
    assert text.splitlines()[0] == "path,cluster"
    # a file that cannot be written whole: one line, exit 2, the earlier file as it was
    target.write_text("earlier\n")
    res = subprocess.run([MDCLUST, "export", "--store", str(small.path), "--out", str(target)],
                         capture_output=True, text=True, timeout=300,
                         preexec_fn=_file_size_limit(40))
    assert res.returncode == 2 and "cannot write" in error_line(res), res.stderr
    assert target.read_text() == "earlier\n"
    assert [p.name for p in tmp_path.glob(".out.csv.tmp-*")] == []


def test_a_reader_that_stops_early_is_not_an_error(small):
    """`mdclust export | head -1`: the closed pipe ends the command quietly, exit 0."""
    assert run("cluster", "--method", "kmeans", "--k", "2", "--store", small.path).returncode == 0
    r, w = os.pipe()
    os.close(r)  # the reader is gone before the first row is written
    proc = subprocess.run([MDCLUST, "export", "--store", str(small.path)], stdout=w,
                          stderr=subprocess.PIPE, text=True, timeout=300)
    os.close(w)
    assert proc.returncode == 0 and proc.stderr == ""


def test_models_and_datasets_accept_store_like_every_command(tmp_path):
    assert run("models", "--store", tmp_path / "s.h5", "--json").returncode == 0
    res = run("datasets", "shapes", tmp_path / "d", "--n", "4", "--store", tmp_path / "s.h5",
              "--json")
    assert res.returncode == 0 and __import__("json").loads(res.stdout)["n"] == 4
    assert not (tmp_path / "s.h5").exists()


@pytest.mark.parametrize("content,message", [
    (b"path,color\nimg0000.png,r\xffed\n", "is not UTF-8 text"),
    (b"path,color\nimg0000.png,red,extra\n", "3 cells but the header has 2 columns"),
    (b"path,color\nimg0000.png,re\x00d\n", "a NUL byte"),
    (b"path,color\nimg0000.png,red\nimg0000.png,blue\n", "has color 'blue' here and 'red'"),
    (b"path,color,color\nimg0000.png,red,blue\n", "column 'color' appears twice"),
])
def test_hostile_label_csvs_are_one_line_errors(small, tmp_path, content, message):
    bad = tmp_path / "labels.csv"
    bad.write_bytes(content)
    before = small.path.read_bytes()
    res = run("embed", tmp_path / "imgs", "--model", TINY, "--pretrained", "random",
              "--labels", bad, "--store", small.path)
    assert res.returncode == 2 and message in error_line(res)
    assert small.path.read_bytes() == before


def test_deep_images_decode_to_their_content_not_white_or_black(tmp_path):
    import numpy as np
    from PIL import Image

    from mdclust.core.images import load_rgb

    ramp = np.linspace(0, 1, 32 * 32).reshape(32, 32)
    Image.fromarray((ramp * 65535).astype(np.uint16)).save(tmp_path / "a.png")
    Image.fromarray(ramp.astype(np.float32), mode="F").save(tmp_path / "b.tif")
    Image.fromarray((ramp * 4000 - 1000).astype(np.float32), mode="F").save(tmp_path / "c.tif")
    for name in ("a.png", "b.tif", "c.tif"):
        px = np.asarray(load_rgb(tmp_path / name))[..., 0].astype(float)
        assert px[0, 0] == 0 and px[-1, -1] == 255, name
        assert abs(px.mean() - 127.5) < 1.5, name  # Pillow alone: 255 (16-bit) or 0 (float)


def test_bad_names_and_broken_links_are_listed_and_the_rest_embedded(tmp_path):
    images = tmp_path / "imgs"
    write_images(images, 4, size=(24, 24))
    shutil.copy(images / "img0000.png", os.fsencode(images) + b"/caf\xff.png")
    os.symlink(images / "gone.png", images / "dangling.png")
    store = tmp_path / "s.h5"
    res = run("embed", images, "--model", TINY, "--pretrained", "random", "--store", store,
              "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["images"] == 4
    reasons = dict(out["skipped"]) if isinstance(out["skipped"][0], list) else \
        {s["path"]: s["reason"] for s in out["skipped"]}
    assert reasons["dangling.png"] == "broken symbolic link"
    assert reasons["caf\ufffd.png"] == "file name is not valid UTF-8; rename the file"
    again = run("embed", images, "--model", TINY, "--pretrained", "random", "--store", store,
                "--json")  # the same folder can be embedded again (it crashed at commit)
    assert again.returncode == 0 and json.loads(again.stdout)["images"] == 4


def test_an_embed_with_nothing_to_do_leaves_the_file_alone(small, tmp_path):
    before = (small.path.stat().st_ino, small.path.stat().st_mtime_ns)
    res = run("embed", tmp_path / "imgs", "--model", TINY, "--pretrained", "random",
              "--store", small.path, "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["embedded"] == 0
    assert (small.path.stat().st_ino, small.path.stat().st_mtime_ns) == before


def test_two_embeds_of_different_folders_into_one_new_store_lose_nothing(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write_images(a, 60, size=(24, 24), prefix="a")
    write_images(b, 60, seed=1, size=(24, 24), prefix="b")
    store = tmp_path / "s.h5"
    args = ["--model", TINY, "--pretrained", "random", "--store", str(store), "--quiet",
            "--batch-size", "4", "--workers", "0"]
    first = subprocess.Popen([MDCLUST, "embed", str(a), *args], stderr=subprocess.PIPE,
                             text=True)
    time.sleep(1)
    second = run("embed", b, *args)
    first.wait(timeout=300)
    codes = sorted([first.returncode, second.returncode])
    assert codes == [0, 2]  # one wins, the other is told the store holds another folder
    st = Store(store)
    images = st.read_group("images")
    feats = st.read_group(f"features/{st.children('features')[0]}")
    assert len(images["path"]) == 60 and len(feats["sha256"]) == 60
    assert set(images["sha256"]) == set(feats["sha256"])
    loser = second if second.returncode else first
    err = loser.stderr.strip().splitlines()[-1]
    assert "holds images from" in err


def _file_size_limit(limit: int):
    """A child whose files cannot grow past ``limit`` bytes: writes fail as on a full disk."""
    import resource
    import signal

    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_the_store_survives(small, tmp_path):
    before = small.path.read_bytes()
    limit = len(before) // 2  # the new file cannot be written whole
    res = subprocess.run([MDCLUST, "cluster", "--method", "kmeans", "--k", "2", "--store",
                          str(small.path)], capture_output=True, text=True, timeout=300,
                         preexec_fn=_file_size_limit(limit))
    assert res.returncode == 2
    line = error_line(res)
    assert "cannot write the store" in line and "nothing was changed" in line
    assert small.path.read_bytes() == before
    assert not list(small.path.parent.glob(".s.h5.tmp-*"))
    more = tmp_path / "more"
    write_images(more, 40, seed=3, size=(24, 24), prefix="m")
    for p in more.rglob("*.png"):
        p.rename(tmp_path / "imgs" / p.name)
    res = subprocess.run([MDCLUST, "embed", str(tmp_path / "imgs"), "--model", TINY,
                          "--pretrained", "random", "--store", str(small.path), "--batch-size",
                          "8", "--workers", "0", "--quiet"], capture_output=True, text=True,
                         timeout=300, preexec_fn=_file_size_limit(1500))
    assert res.returncode == 2 and "cannot write" in error_line(res)
    assert small.path.read_bytes() == before
    ok = run("embed", tmp_path / "imgs", "--model", TINY, "--pretrained", "random",
             "--store", small.path, "--json")  # with room again, the rerun completes
    assert ok.returncode == 0 and json.loads(ok.stdout)["images"] == 52


def test_a_damaged_store_is_one_line(small, tmp_path):
    import h5py

    broken = tmp_path / "broken.h5"
    data = bytearray(small.path.read_bytes())
    for i in range(len(data) // 3, len(data) * 2 // 3, 7):
        data[i] = (data[i] * 31 + 7) % 256  # scribble over the middle of the file
    broken.write_bytes(bytes(data))
    for args in (["info"], ["cluster", "--method", "kmeans", "--k", "2"],
                 ["eval", "--method", "kmeans"]):
        res = run(*args, "--store", broken)
        assert res.returncode == 2, (args, res.stderr[-500:])
        error_line(res)
    odd = tmp_path / "odd.h5"
    shutil.copy(small.path, odd)
    with h5py.File(odd, "a") as f:
        f.attrs["mdclust_schema"] = "one"
    res = run("info", "--store", odd)
    assert res.returncode == 2 and "schema attribute is unreadable or not a number" in \
        error_line(res)


VOLATILE = ("time", "fetched", "seconds", "resumed_from", "created")


def _snapshot(st: Store) -> dict:
    """Everything a reader sees: every group's datasets and attributes, timings aside."""
    out = {}

    def walk(path):
        g = st.read_group(path)
        if g is not None and g.data:
            out[path] = (g.data, {k: v for k, v in g.attrs.items() if k not in VOLATILE})
        for name in st.children(path):
            if g is None or name not in g.data:  # a subgroup, not a dataset
                walk(f"{path.rstrip('/')}/{name}".lstrip("/") or "/")
    walk("/")
    return out


def _same(a: dict, b: dict) -> bool:
    import numpy as np

    if a.keys() != b.keys():
        return False
    for key in a:
        (da, aa), (db, ab) = a[key], b[key]
        if da.keys() != db.keys():
            return False
        for name in da:
            x, y = da[name], db[name]
            if isinstance(x, list) or isinstance(y, list):
                if list(x) != list(y):
                    return False
            elif x.dtype.kind == "f":  # a resumed training ends within 1e-4 of a straight one
                if x.shape != y.shape or not np.allclose(x, y, atol=1e-4):
                    return False
            elif not np.array_equal(x, y):
                return False
        if key.startswith(("train", "interests/thing/train")):
            aa = {k: v for k, v in aa.items() if k != "params"}  # holds the device and timings
            ab = {k: v for k, v in ab.items() if k != "params"}
        if aa != ab:
            return False
    return True


# Kill moments per stage: 2 in the default suite; the figures in docs/store.md come from
# MDCLUST_FAULT_KILLS=21 (6 stages: 126 moments).
KILLS = int(os.environ.get("MDCLUST_FAULT_KILLS", "2"))


@pytest.fixture
def neighbours(tmp_path, monkeypatch):
    """A store whose groups are data files, beside a store moved away from its name (whose
    data files share its data folder), a copy of its entry file and a symlink to it."""
    monkeypatch.setenv("MDCLUST_DATA_FILE_MIN_BYTES", DATA_FILE_MIN)
    monkeypatch.setattr(store_mod, "EXTERNAL_MIN_BYTES", int(DATA_FILE_MIN))
    first = embedded_store(tmp_path, 12)
    first.path.rename(tmp_path / "moved.h5")
    st = embedded_store(tmp_path, 12)
    shutil.copy(st.path, tmp_path / "backup.h5")
    (tmp_path / "link.h5").symlink_to(st.path)
    return st


@pytest.mark.timeout(600 + 120 * KILLS)
@pytest.mark.parametrize("stage", ["embed", "candidates", "textcache", "filter", "cluster",
                                   "train"])
@pytest.mark.slow
def test_kill9_at_random_points_leaves_old_or_complete_store(neighbours, tmp_path, stage):
    """kill -9 at seeded random moments of each writing stage, on a store of data files with
    neighbours: afterwards the store reads as before or as an uninterrupted run left it, the
    neighbours are untouched, rerunning the command gives that result, and the next commit
    leaves no data file of the store that no entry file links to."""
    import random

    from mdclust.core import store_files

    small = neighbours
    words = tmp_path / "w.txt"
    words.write_text("\n".join(f"word{i}" for i in range(40)))
    pool = tmp_path / "pool.txt"  # enough texts for several journal batches and a merge
    syllables = [c + v for c in "bcdfghklmnprstvz" for v in "aeiou"]
    pool.write_text("\n".join(a + b for a in syllables for b in syllables))  # 6,400 words
    if stage in ("filter", "cluster", "train"):
        assert run("candidates", "--interest", "thing", "--from-file", words, "--k", "3",
                   "--store", small.path).returncode == 0
    if stage == "embed":
        write_images(tmp_path / "imgs", 60, seed=9, size=(24, 24), prefix="k")
    if stage == "cluster":
        assert run("filter", "--interest", "thing", "--method", "gradnorm", "--k", "3",
                   "--store", small.path).returncode == 0
    commands = {
        "embed": ["embed", tmp_path / "imgs", "--model", TINY, "--pretrained", "random",
                  "--batch-size", "4", "--workers", "0"],
        "candidates": ["candidates", "--interest", "thing", "--from-file", words, "--k", "3"],
        "textcache": ["candidates", "--interest", "pool", "--from-file", pool, "--k", "3"],
        "filter": ["filter", "--interest", "thing", "--method", "gradnorm", "--k", "3"],
        "cluster": ["cluster", "--interest", "thing", "--method", "gradnorm"],
        "train": ["train", "--interest", "thing", "--method", "multidproxy", "--k", "3",
                  "--epochs", "60", "--refine-every", "12", "--batch", "4",
                  "--checkpoint-every", "5", "--device", "cpu"],
    }
    copy = Store(tmp_path / "copy" / "s.h5")
    copy.path.parent.mkdir()
    shutil.copy(small.path, copy.path)
    shutil.copytree(small.data_dir, copy.data_dir)
    others = {p: everything(tmp_path / p) for p in ("moved.h5", "backup.h5")}

    def command(st):
        return [MDCLUST, *map(str, commands[stage]), "--store", str(st.path), "--quiet"]

    before = _snapshot(small)
    t0 = time.monotonic()
    ref = subprocess.run(command(copy), capture_output=True, text=True, timeout=300)
    span = time.monotonic() - t0  # kill moments spread over the whole of an undisturbed run
    assert ref.returncode == 0, ref.stderr
    reference = _snapshot(copy)
    assert not _same(reference, before)
    pristine = tmp_path / "pristine.h5"
    shutil.copy(small.path, pristine)
    pristine_files = {p.name for p in small.data_dir.iterdir()}

    def restore():
        """Back to the state before the command, so that the next kill meets real work
        rather than a no-op rerun; the data files other stores link to stay as they are."""
        shutil.copy(pristine, small.path)
        for p in small.data_dir.iterdir():
            if p.name not in pristine_files:
                p.unlink()
        for folder in (small.journal_dir, small.path.with_name("s.h5.checkpoints")):
            shutil.rmtree(folder, ignore_errors=True)

    rng = random.Random(f"kill-{stage}")
    landed = 0
    for _ in range(KILLS):
        proc = subprocess.Popen(command(small), stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, max(1.0, span)))
        running = proc.poll() is None
        landed += running
        proc.kill()
        proc.wait()
        after = _snapshot(small)  # reads cleanly, whatever moment it died
        # every group is as before or as the finished run left it: a stage that commits in
        # steps (embed's journal, train's checkpoints) may stop between two steps
        for key in set(after) | set(before) | set(reference):
            mine = {key: after[key]} if key in after else {}
            assert any(_same(mine, {key: other[key]} if key in other else {})
                       for other in (before, reference)), key
        for name, content in others.items():  # no other store's data file was touched
            assert everything(tmp_path / name) == content, name
        if not running:  # it had finished: a rerun would be a no-op
            restore()
    done = subprocess.run(command(small), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert _same(_snapshot(small), reference)
    assert not list(small.path.parent.glob(".s.h5.tmp-*"))
    assert not small.journal_dir.exists()  # every journal batch merged
    with h5py.File(small.path, "r") as f:
        previous = data_files(f)
    res = run("cluster", "--method", "kmeans", "--k", "2", "--store", small.path)
    assert res.returncode == 0, res.stderr
    with h5py.File(small.path, "r") as f:
        linked = {(small.path.parent / n).name for n in data_files(f) | previous}
        sid = f.attrs["mdclust_store_id"]
    sid = sid.decode() if isinstance(sid, bytes) else sid
    linked |= {p.name for p in store_files.linked_by_neighbours(small.path)}  # backup.h5's
    own = {p.name for p in small.data_dir.glob("*.h5")
           if store_files.owner_in_name(p.name) == sid}
    assert own <= linked, own - linked  # no orphan of a killed commit is left
    for name, content in others.items():
        assert everything(tmp_path / name) == content, name
    assert (tmp_path / "link.h5").is_symlink()
    print(f"kill9[{stage}]: {landed} of {KILLS} kills landed while the command ran "
          f"(an undisturbed run: {span:.1f} s)")


def test_train_writes_each_text_cache_group_in_one_commit(small, tmp_path, monkeypatch):
    """Candidates and the prompt share the "{}" cache group; two commits to it left a state a
    kill could expose that was neither the old store nor the finished one (CI, stop 20)."""
    import mdclust
    from mdclust.core.store import Transaction
    from mdclust.methods.multidproxy import MultiDProxyConfig

    words = tmp_path / "w.txt"
    words.write_text("\n".join(f"word{i}" for i in range(40)))
    mdclust.candidates(small, "thing", from_file=words, k=3)
    puts = []
    real = Transaction.put_group

    def spy(self, path, data, attrs=None, provenance=True):
        puts.append(path)
        return real(self, path, data, attrs, provenance)

    monkeypatch.setattr(Transaction, "put_group", spy)
    mdclust.train(small, "thing", k=3, device="cpu",
                  config=MultiDProxyConfig(k=3, epochs=2, refine_every=1, batch=4))
    cache = [p for p in puts if p.startswith("text_features/")]
    assert cache and len(cache) == len(set(cache)), cache
    g = small.read_group(cache[0])
    assert len(g["text"]) == 42 and list(g["text"][-1:]) == ["*"]


def test_datasets_into_an_existing_file_is_one_line(tmp_path):
    target = tmp_path / "taken"
    target.write_text("mine")
    res = run("datasets", "shapes", target, "--n", "4")
    assert res.returncode == 2 and "exists and is not a folder" in error_line(res)
    assert target.read_text() == "mine"


# ==============================================================================================
# Issue 22, items 1-6, 10, 12: no command deletes, undoes or hides another's data
# ==============================================================================================



@pytest.fixture
def filed(tmp_path, monkeypatch):
    """A real 12-image store whose groups are data files (here and in subprocesses)."""
    monkeypatch.setenv("MDCLUST_DATA_FILE_MIN_BYTES", DATA_FILE_MIN)
    monkeypatch.setattr(store_mod, "EXTERNAL_MIN_BYTES", int(DATA_FILE_MIN))
    st = embedded_store(tmp_path, 12)
    mdclust.cluster(st, method="kmeans", k=2)
    with h5py.File(st.path, "r") as f:
        assert len(data_files(f)) >= 3  # images, features, the clustering
    return st


def commit_twice(st):
    for k in (3, 2):  # each replaces the clustering's data file (in-process: the same commit)
        mdclust.cluster(Store(st.path), method="kmeans", k=k)


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


@pytest.mark.slow
def test_a_missing_clustering_input_is_named_at_once_and_its_stage_remakes_it(filed, tmp_path):
    import time

    words = tmp_path / "w.txt"
    words.write_text("\n".join(f"word{i}" for i in range(20)))
    mdclust.candidates(filed, "thing", from_file=words, k=2)
    mdclust.filter_nouns(filed, "thing", k=2)
    mdclust.cluster(filed, "thing", method="gradnorm")
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


# ==============================================================================================
# Issue 22, items 12-13: the Python API's boundary and words files
# ==============================================================================================

@pytest.mark.parametrize("call, message", [
    (lambda s: mdclust.cluster(s, method="kmeans", k="3"), "--k must be an integer, not '3'"),
    (lambda s: mdclust.cluster(s, method="kmeans", k=3.7), "--k must be an integer, not 3.7"),
    (lambda s: mdclust.cluster(s, method="kmeans", k=True), "--k must be an integer, not True"),
    (lambda s: mdclust.cluster(s, method="kmeans", k=3, seed="x"),
     "--seed must be an integer, not 'x'"),
    (lambda s: mdclust.cluster(s, 123, method="kmeans", k=3),
     "--interest must be a string, not 123"),
    (lambda s: mdclust.evaluate(s, method="kmeans", runs="2"),
     "--runs must be an integer, not '2'"),
    (lambda s: mdclust.report(s, s.path.parent / "r", thumbs="3"),
     "--thumbs must be an integer, not '3'"),
    (lambda s: mdclust.report(s, s.path.parent / "r", interests="color"),
     "--interest must be a list of strings, not 'color'"),
    (lambda s: mdclust.candidates(s, "x", source="wordnet", timeout="60"),
     "--timeout must be a number, not '60'"),
    (lambda s: mdclust.filter_nouns(s, "x", k=2, tau=float("nan")),
     "--tau must be a number, not nan"),
    (lambda s: mdclust.export_csv(s, method="kmeans", out=5),
     "--out must be a path or an open text file, not 5"),
])
def test_wrong_types_are_bad_input_naming_the_flag(small, tmp_path, call, message):
    words = tmp_path / "w.txt"
    words.write_text("red\ngreen\nblue\n")
    mdclust.candidates(small, "x", from_file=words)  # so that each call gets to its argument
    mdclust.cluster(small, method="kmeans", k=2)
    before = small.path.read_bytes()
    with pytest.raises(mdclust.BadInput) as info:
        call(small)
    assert str(info.value) == message
    assert small.path.read_bytes() == before


def test_integral_floats_and_numpy_integers_are_integers(small):
    res = mdclust.cluster(small, method="kmeans", k=3.0, seed=np.int64(1))
    assert res.k == 3 and isinstance(res.k, int) and len(set(res.labels)) == 3


def test_every_stage_checks_its_arguments_and_keeps_its_signature():
    """Each public stage is checked (a bad store is BadInput, not whatever as_store does with
    123) and still shows its own signature and docstring (test_layout reads them)."""
    from mdclust.stages import candidates, cluster, embed, evaluate, filter, info, report, train

    stages = {"embed": embed.embed, "candidates": candidates.candidates,
              "filter_nouns": filter.filter_nouns, "train": train.train,
              "cluster": cluster.cluster, "load_clustering": cluster.load_clustering,
              "evaluate": evaluate.evaluate, "export_csv": evaluate.export_csv,
              "info": info.info, "models": info.models, "report": report.report}
    for name, raw in stages.items():
        fn = getattr(mdclust, name)
        assert inspect.signature(fn) == inspect.signature(raw) and fn.__doc__ == raw.__doc__
        required = [p for p in inspect.signature(raw).parameters.values()
                    if p.default is p.empty and p.kind is p.POSITIONAL_OR_KEYWORD]
        if not required:
            continue
        args = [123] + ["x"] * (len(required) - 1)
        with pytest.raises(mdclust.BadInput, match=r"^(IMAGES_DIR|--store) must be .*not 123$"):
            fn(*args)


def test_error_messages_name_real_cli_options():
    """The flag a message names is the command's own option (or, for a parameter the CLI does
    not have, the parameter's name)."""
    from typer.main import get_command

    from mdclust.cli import app

    commands = get_command(app).commands
    cli_name = {"filter_nouns": "filter", "evaluate": "eval", "export_csv": "export"}
    for name in ("embed", "candidates", "filter_nouns", "train", "cluster", "evaluate",
                 "export_csv", "info", "report"):
        command = commands[cli_name.get(name, name)]
        spelled = {o for p in command.params for o in (*p.opts, p.name.upper())}
        for param, flag in getattr(mdclust, name).flags.items():
            assert flag in spelled or flag == param, (name, param, flag)


@pytest.mark.parametrize("bad", ["a\x00b", "a\x01b", "\x7f"])
def test_interest_names_with_control_characters_are_refused(small, tmp_path, bad):
    words = tmp_path / "w.txt"
    words.write_text("red\ngreen\nblue\n")
    before = small.path.read_bytes()
    with pytest.raises(mdclust.BadInput, match="--interest must be text without"):
        mdclust.candidates(small, bad, from_file=words)
    assert small.path.read_bytes() == before  # "a\x00b" was stored as interest "a"


def test_interest_names_are_checked_below_the_api_too():
    from mdclust.core.layout import validate_interest

    for bad in ("a\x00b", "a\x01", "a/b", ".a"):
        with pytest.raises(mdclust.BadInput, match="invalid interest name"):
            validate_interest(bad)
    with pytest.raises(mdclust.BadInput, match="--interest must be a string, not 123"):
        validate_interest(123)
    assert validate_interest(" a\tb\n ") == "a b"
    assert validate_interest("a\x00b".replace("\x00", " ")) == "a b"


def test_a_control_character_in_an_interest_is_one_line_on_the_cli(small):
    res = run("candidates", "--interest", "a\x01b", "--source", "wordnet", "--store",
              small.path)
    assert res.returncode == 2
    assert "--interest must be text without control characters" in error_line(res)


def test_a_words_file_with_a_utf8_bom_keeps_no_bom(small, tmp_path):
    words = tmp_path / "w.txt"
    words.write_bytes("red\ngreen\nblue\n".encode("utf-8-sig"))
    res = mdclust.candidates(small, "color", from_file=words, encode=False)
    assert res.words == ["red", "green", "blue"]


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "words.fifo"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("kind, message", [
    ("/dev/zero", "is a device, not a regular file; give a regular text file"),
    ("fifo", "is a FIFO (named pipe), not a regular file; give a regular text file"),
    ("dir", "is a directory, not a regular file; give a regular text file"),
])
def test_a_words_file_that_is_not_a_regular_file_says_what_it_is(small, tmp_path, fifo, kind,
                                                                   message):
    path = {"/dev/zero": "/dev/zero", "fifo": fifo, "dir": tmp_path}[kind]
    before = small.path.read_bytes()
    with pytest.raises(mdclust.BadInput, match=message.replace("(", r"\(").replace(")", r"\)")):
        mdclust.candidates(small, "x", from_file=path)
    res = run("candidates", "--interest", "x", "--from-file", path, "--store", small.path,
              timeout=60)  # a FIFO opened for reading would block here until killed
    assert res.returncode == 2 and message in error_line(res)
    assert small.path.read_bytes() == before


@pytest.mark.parametrize("data, message", [
    ("red\ngreen\n".encode("utf-16"), "is UTF-16 text, not UTF-8; save it as UTF-8"),
    ("red\ngreen\n".encode("utf-16-le"), "is not text (it holds NUL bytes at byte 1"),
    (b"red\n\x00\x00\x00\x07ELF", "is not text (it holds NUL bytes at byte 4"),
])
def test_a_words_file_that_is_not_utf8_text_says_so(small, tmp_path, data, message):
    words = tmp_path / "w.txt"
    words.write_bytes(data)
    res = run("candidates", "--interest", "x", "--from-file", words, "--store", small.path)
    assert res.returncode == 2 and message in error_line(res)
    with pytest.raises(mdclust.BadInput, match="save it as UTF-8"):
        mdclust.candidates(small, "x", from_file=words)


# ==============================================================================================
# Issue 22, items 7-9, 11-12: Ray addresses, export, huge images, report folders
# ==============================================================================================

def clustered(tmp_path: Path, n: int = 6) -> Store:
    st = embedded_store(tmp_path, n)
    res = run("cluster", "--method", "kmeans", "--k", "2", "--store", st.path, "--quiet")
    assert res.returncode == 0, res.stderr
    return st


def flat_png(path: Path, width: int, height: int) -> None:
    """A one-colour 1-bit greyscale PNG, streamed: 100 Mpx is ~12 kB on disk and ~0.2 s."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    row = b"\0" * (1 + -(-width // 8))  # filter byte, then the packed pixels
    z = zlib.compressobj(9)
    data = b"".join(z.compress(row * 1000) for _ in range(height // 1000))
    data += z.compress(row * (height % 1000)) + z.flush()
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([1, 0, 0, 0, 0])
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data)
                     + chunk(b"IEND", b""))


# -- 7: a Ray address that is not a Ray cluster ----------------------------------------------
class _Silent(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def ray_job(tmp_path):
    """A store with images still to encode, and the arguments of `embed --engine ray`."""
    pytest.importorskip("ray")
    st = embedded_store(tmp_path, 4)
    write_images(tmp_path / "imgs", 2, seed=1, size=(24, 24), prefix="new")
    args = ["embed", tmp_path / "imgs", "--model", TINY, "--pretrained", "random",
            "--engine", "ray", "--store", st.path]
    return st, args


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(150)
def test_a_web_server_or_a_closed_port_as_ray_address_is_one_prompt_line(ray_job):
    st, args = ray_job
    before = st.path.read_bytes()
    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Silent)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    try:
        t0 = time.monotonic()
        res = run(*args, "--address", f"127.0.0.1:{web.server_port}", timeout=60)
        took = time.monotonic() - t0
    finally:
        web.shutdown()
    assert res.returncode == 2 and took < 30, (took, res.stderr)
    line = error_line(res)
    assert f"127.0.0.1:{web.server_port} answers HTTP: it is a web server" in line
    assert "dashboard" in line and "host:6379" in line
    assert st.path.read_bytes() == before

    t0 = time.monotonic()
    res = run(*args, "--address", f"127.0.0.1:{_free_port()}", "--json", timeout=60)
    assert res.returncode == 2 and time.monotonic() - t0 < 30
    assert "nothing answers" in error_line(res) and res.stdout == ""
    assert st.path.read_bytes() == before


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_a_silent_server_as_ray_address_is_given_up_on_without_ray_lines(ray_job):
    st, args = ray_job
    before = st.path.read_bytes()
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:  # takes connections and never says a word
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                pass

    threading.Thread(target=accept, daemon=True).start()
    try:
        t0 = time.monotonic()
        res = run(*args, "--address", f"127.0.0.1:{server.getsockname()[1]}", "--quiet",
                  env={"MDCLUST_RAY_CONNECT_TIMEOUT": "3"}, timeout=60)
        took = time.monotonic() - t0
    finally:
        stop.set()
        server.close()
        for c in held:
            c.close()
    assert res.returncode == 2 and took < 30, (took, res.stderr)
    assert "no Ray cluster answered within 3 s" in error_line(res)  # and no Ray log lines
    assert st.path.read_bytes() == before
    bad = run(*args, "--address", "127.0.0.1:1", env={"MDCLUST_RAY_CONNECT_TIMEOUT": "soon"})
    assert bad.returncode == 2
    assert "MDCLUST_RAY_CONNECT_TIMEOUT must be a number" in error_line(bad)


# -- 8: export of hostile names ------------------------------------------------------------
HOSTILE = ["a\rb.png", "=cmd|' -C calc'!A0.png", "+1.png", "-x.png", "@x.png", "\tlead.png",
           "\rcr.png", "plain.png", "comma,name.png", 'quote"name.png']


FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _read_csv(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


def test_export_quotes_carriage_returns_and_defuses_formulas(tmp_path):
    folder = tmp_path / "imgs"
    files = write_images(folder, len(HOSTILE), size=(24, 24))
    for f, name in zip(files, HOSTILE):
        f.rename(folder / name)
    st = Store(tmp_path / "s.h5")
    assert embed(folder, st, model=TINY, pretrained="random", workers=0).images == len(HOSTILE)
    res = run("cluster", "--method", "kmeans", "--k", "2", "--store", st.path, "--quiet")
    assert res.returncode == 0, res.stderr
    defused = {("'" + n if n.startswith(FORMULA) else n) for n in HOSTILE}

    for extra, want in (([], defused), (["--raw"], set(HOSTILE))):
        out = tmp_path / f"c{len(extra)}.csv"
        res = run("export", "--method", "kmeans", "--out", out, "--store", st.path, *extra)
        assert res.returncode == 0, res.stderr
        rows = _read_csv(out.read_bytes().decode())
        assert rows[0] == ["path", "cluster"] and all(len(r) == 2 for r in rows)
        assert {r[0] for r in rows[1:]} == want and len(rows) == len(HOSTILE) + 1
        assert {r[1] for r in rows[1:]} <= {"0", "1"}
        stdout = subprocess.run([MDCLUST, "export", "--method", "kmeans", "--store", st.path,
                                 *extra], capture_output=True, timeout=300)
        assert stdout.returncode == 0 and stdout.stdout == out.read_bytes()

    res = run("export", "--method", "kmeans", "--json", "--store", st.path)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert got["n"] == len(HOSTILE) and {r["path"] for r in got["rows"]} == set(HOSTILE)
    assert all(type(r["cluster"]) is int for r in got["rows"])

    import mdclust

    assert {r[0] for r in _read_csv(mdclust.export_csv(st, method="kmeans"))[1:]} == defused
    assert {r[0] for r in _read_csv(mdclust.export_csv(st, method="kmeans", raw=True))[1:]} \
        == set(HOSTILE)


# -- 9: decompression bombs --------------------------------------------------------------
@pytest.mark.slow
def test_a_huge_image_is_skipped_with_a_reason_and_pillow_stays_quiet(tmp_path):
    folder = tmp_path / "imgs"
    write_images(folder, 3, size=(24, 24))
    flat_png(folder / "huge.png", 10_000, 10_000)  # above Pillow's limit: it warns
    flat_png(folder / "huger.png", 14_000, 14_000)  # above twice it: Pillow raises
    store = tmp_path / "s.h5"
    res = run("embed", folder, "--model", TINY, "--pretrained", "random", "--workers", "0",
              "--store", store, "--json")
    assert res.returncode == 0 and res.stderr == "", res.stderr
    out = json.loads(res.stdout)
    assert out["images"] == 3
    reasons = {s["path"]: s["reason"] for s in out["skipped"]}
    limit = "above the 89.5 Mpx limit ($MDCLUST_MAX_PIXELS sets it)"
    assert reasons == {"huge.png": f"too large: 100 Mpx, {limit}",
                       "huger.png": f"too large: 196 Mpx, {limit}"}

    before = store.read_bytes()
    bad = run("embed", folder, "--model", TINY, "--pretrained", "random", "--store", store,
              env={"MDCLUST_MAX_PIXELS": "lots"})
    assert bad.returncode == 2 and "MDCLUST_MAX_PIXELS must be a whole number" in \
        error_line(bad)
    assert store.read_bytes() == before
    # a raised limit retries the files skipped as too large, though they did not change
    res = run("embed", folder, "--model", TINY, "--pretrained", "random", "--workers", "0",
              "--store", store, "--json", env={"MDCLUST_MAX_PIXELS": "150000000"})
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["images"] == 4 and [s["path"] for s in out["skipped"]] == ["huger.png"]


@pytest.mark.slow
def test_report_shows_a_placeholder_for_a_huge_image_and_pillow_stays_quiet(tmp_path):
    st = clustered(tmp_path)
    victim = sorted((tmp_path / "imgs").rglob("*.png"))[0]
    flat_png(victim, 10_000, 10_000)  # replaced after embed: the report meets it
    res = run("report", "--out", tmp_path / "r", "--store", st.path, "--json")
    assert res.returncode == 0 and res.stderr == "", res.stderr
    assert json.loads(res.stdout)["missing_images"] == 1
    assert 'class="ph"' in (tmp_path / "r" / "index.html").read_text()
    res = run("report", "--out", tmp_path / "r2", "--store", st.path, "--quiet")
    assert res.returncode == 0
    assert res.stderr.startswith("mdclust: warning: 1 images could not be read")
    assert len(res.stderr.splitlines()) == 1, res.stderr


# -- 11, 12: where a report may go ---------------------------------------------------------
def test_a_report_is_never_written_into_the_collection_and_embed_skips_own_folders(tmp_path):
    st = clustered(tmp_path)
    imgs = tmp_path / "imgs"
    before = st.path.read_bytes()
    for out in (imgs, imgs / "report", imgs / "sub" / "r"):
        res = run("report", "--out", out, "--store", st.path)
        assert res.returncode == 2
        assert f"is inside the image folder {imgs}" in error_line(res)
        assert "choose a folder outside it" in res.stderr
    assert not (imgs / "report").exists() and not (imgs / "thumbs").exists()
    assert not (imgs / "sub" / "r").exists() and st.path.read_bytes() == before

    res = run("report", "--out", tmp_path / "rep", "--store", st.path, "--quiet")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "rep" / ".mdclust-report").is_file()
    # a report that reached the collection anyway (copied there, or by an older mdclust), and
    # folders a store keeps beside itself: none of them are images of the collection
    shutil.copytree(tmp_path / "rep", imgs / "old-report")
    assert list((imgs / "old-report" / "thumbs").glob("*.jpg"))
    one = next(imgs.glob("*.png"))
    for name in ("s.h5.data", "t.h5.journal", "u.h5.checkpoints"):
        (imgs / name).mkdir()
        shutil.copy(one, imgs / name / "copy.png")
    res = run("embed", imgs, "--model", TINY, "--pretrained", "random", "--workers", "0",
              "--store", st.path, "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert (out["images"], out["embedded"], out["skipped_count"]) == (6, 0, 0)


def test_a_report_out_that_is_a_file_is_one_line_naming_it(tmp_path):
    st = clustered(tmp_path)
    target = tmp_path / "notes.txt"
    target.write_text("keep me\n")
    res = run("report", "--out", target, "--store", st.path)
    assert res.returncode == 2
    line = error_line(res)
    assert f"--out {target} is a file, not a folder; choose a folder" in line
    res = run("report", "--out", target / "sub", "--store", st.path)
    assert res.returncode == 2
    line = error_line(res)
    assert "internal error" not in line and str(target) in line
    assert target.read_text() == "keep me\n"
