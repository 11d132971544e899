import json
import signal
import subprocess
import time

import numpy as np
import pytest
from conftest import MDCLUST, TINY, write_images
from typer.testing import CliRunner

from mdclust.cli import app
from mdclust.core.store import Store

runner = CliRunner()
TINY_ARGS = ["--model", TINY, "--pretrained", "random", "--workers", "0"]


def test_embed_and_info_json_through_typer(images, store_path):
    r = runner.invoke(app, ["embed", str(images), "--store", str(store_path), "--json",
                            *TINY_ARGS])
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["images"] == 12 and out["embedded"] == 12 and out["skipped_count"] == 0
    r = runner.invoke(app, ["info", "--store", str(store_path), "--json"])
    assert r.exit_code == 0
    info = json.loads(r.stdout)
    assert {k: info[k] for k in ("images", "skipped", "models", "aspects", "interests")} == {
        "images": 12, "skipped": 0, "models": [f"{TINY}@random"], "aspects": [], "interests": {}}


def test_store_from_environment(images, store_path):
    r = runner.invoke(app, ["embed", str(images), "--quiet", *TINY_ARGS],
                      env={"MDCLUST_STORE": str(store_path)})
    assert r.exit_code == 0 and r.stdout == ""
    assert Store(store_path).read_group("images") is not None


@pytest.mark.parametrize("args,message", [
    (["info"], "no store at"),
    (["embed", "/no/such/folder"], "images folder not found"),
    (["embed", "IMAGES", "--batch-size", "0"], "--batch-size must be at least 1"),
    (["embed", "IMAGES", "--device", "tpu"], "unknown device"),
])
def test_bad_input_is_one_line_and_exit_2(images, store_path, args, message):
    args = [str(images) if a == "IMAGES" else a for a in args]
    r = runner.invoke(app, [*args, "--store", str(store_path), *(
        TINY_ARGS if args[0] == "embed" else [])])
    assert r.exit_code == 2
    assert r.stdout == ""
    assert message in r.stderr and r.stderr.count("\n") == 1


def test_not_a_store_is_refused_and_kept(tmp_path, images):
    f = tmp_path / "thesis.h5"
    f.write_text("my thesis")
    for args in (["info"], ["embed", str(images), *TINY_ARGS]):
        r = runner.invoke(app, [*args, "--store", str(f)])
        assert r.exit_code == 2 and "not an mdclust store" in r.stderr
    assert f.read_text() == "my thesis"


def test_real_subprocess_json_is_clean(images, store_path):
    proc = subprocess.run([MDCLUST, "embed", str(images), "--store", str(store_path), "--json",
                           *TINY_ARGS], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["embedded"] == 12
    proc = subprocess.run([MDCLUST, "info", "--json", "--store", str(store_path)],
                          capture_output=True, text=True, timeout=60)
    assert json.loads(proc.stdout)["images"] == 12


def test_missing_weights_fail_fast_without_network(images, store_path):
    t0 = time.perf_counter()
    proc = subprocess.run([MDCLUST, "embed", str(images), "--store", str(store_path),
                           "--model", "ViT-B-32", "--pretrained", "openai"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "not available offline" in proc.stderr and "--pretrained /path" in proc.stderr
    assert time.perf_counter() - t0 < 60
    assert not store_path.exists()


@pytest.mark.slow
def test_kill9_mid_run_then_resume(tmp_path):
    folder = tmp_path / "many"
    write_images(folder, 300, size=(24, 24))
    store_path = tmp_path / "s.h5"
    journal = store_path.with_name(store_path.name + ".journal")
    cmd = [MDCLUST, "embed", str(folder), "--store", str(store_path), "--batch-size", "2",
           *TINY_ARGS]
    proc = subprocess.Popen([*cmd, "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 90
    while time.time() < deadline and proc.poll() is None:
        if journal.is_dir() and len(list(journal.glob("*.npz"))) >= 10:
            break
        time.sleep(0.005)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_batches = len(list(journal.glob("*.npz")))
    assert 10 <= done_batches < 150

    proc = subprocess.run([*cmd, "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert res["images"] == 300
    assert res["embedded"] <= 300 - 2 * done_batches  # committed batches were not redone
    g = Store(store_path).read_group(f"features/{TINY}@random")
    assert len(g["sha256"]) == len(set(g["sha256"])) == 300
    assert not journal.exists()
    assert np.isfinite(g["vectors"]).all()


def test_a_bug_is_one_line_and_exit_2_not_a_traceback(tmp_path, monkeypatch):
    """An unexpected exception (here: a store whose skipped table lacks a column, as a hand
    edit leaves it) is one line naming the error and where, with exit 2, not exit 1 (which
    scripts read as a failed quality gate); MDCLUST_DEBUG=1 shows the traceback."""
    write_images(tmp_path / "imgs", 3, size=(16, 16))
    st = Store(tmp_path / "s.h5")
    with st.transaction() as txn:
        txn.put_group("skipped", {"path": ["x.png"], "reason": ["?"]})
    cmd = [MDCLUST, "embed", str(tmp_path / "imgs"), "--model", TINY, "--pretrained", "random",
           "--store", str(st.path)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mdclust: error: internal error KeyError")
    assert "MDCLUST_DEBUG=1" in lines[0]
    monkeypatch.setenv("MDCLUST_DEBUG", "1")
    debug = subprocess.run(cmd, capture_output=True, text=True)
    assert debug.returncode == 1 and "Traceback" in debug.stderr
