"""The standing fault suite: hostile conditions a real user meets, each asserting the exit code,
a one-line error on stderr and that the store afterwards equals the store before."""

import json
import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest
from conftest import MDCLUST, TINY, embedded_store, write_images

from mdclust.core.errors import MdclustError
from mdclust.core.store import Store


def run(*args, env=None, **kw):
    return subprocess.run([MDCLUST, *map(str, args)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})}, **kw)


def error_line(res) -> str:
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mdclust: error: "), res.stderr
    return lines[0]


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
                       (["cluster", "--k", "abc"], "Invalid value for '--k'"),
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


def _everything(path) -> dict:
    """Every dataset of a store as bytes, read through its links."""
    import h5py

    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()].tobytes())
                     if isinstance(obj, h5py.Dataset) else None)
    return out


@pytest.fixture
def neighbours(tmp_path, monkeypatch):
    """A store whose groups are data files, beside a store moved away from its name (whose
    data files share its data folder), a copy of its entry file and a symlink to it."""
    import mdclust.core.store as store_mod

    monkeypatch.setenv("MDCLUST_DATA_FILE_MIN_BYTES", "64")
    monkeypatch.setattr(store_mod, "EXTERNAL_MIN_BYTES", 64)
    first = embedded_store(tmp_path, 12)
    first.path.rename(tmp_path / "moved.h5")
    st = embedded_store(tmp_path, 12)
    shutil.copy(st.path, tmp_path / "backup.h5")
    (tmp_path / "link.h5").symlink_to(st.path)
    return st


@pytest.mark.timeout(600 + 120 * KILLS)
@pytest.mark.parametrize("stage", ["embed", "candidates", "textcache", "filter", "cluster",
                                   "train"])
def test_kill9_at_random_points_leaves_old_or_complete_store(neighbours, tmp_path, stage):
    """kill -9 at seeded random moments of each writing stage, on a store of data files with
    neighbours: afterwards the store reads as before or as an uninterrupted run left it, the
    neighbours are untouched, rerunning the command gives that result, and the next commit
    leaves no data file of the store that no entry file links to."""
    import random

    import h5py

    from mdclust.core import store_files
    from mdclust.core.store import data_files

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
    others = {p: _everything(tmp_path / p) for p in ("moved.h5", "backup.h5")}

    def command(st):
        return [MDCLUST, *map(str, commands[stage]), "--store", str(st.path), "--quiet"]

    before = _snapshot(small)
    ref = subprocess.run(command(copy), capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr
    reference = _snapshot(copy)
    assert not _same(reference, before)
    rng = random.Random(f"kill-{stage}")
    for _ in range(KILLS):
        proc = subprocess.Popen(command(small), stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.5, 4.0))
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
            assert _everything(tmp_path / name) == content, name
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
        assert _everything(tmp_path / name) == content, name
    assert (tmp_path / "link.h5").is_symlink()


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
