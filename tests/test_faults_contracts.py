"""Fault-suite contracts of issue #22 (items 7, 8, 9, 11, 12): a wrong Ray address, hostile
names in `export`, decompression bombs, a report written into the collection or onto a file.
Each asserts the exit code, the one-line error or a clean stderr, and an unchanged store."""

import csv
import http.server
import io
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import zlib
from pathlib import Path

import pytest
from conftest import MDCLUST, TINY, embedded_store, write_images

from mdclust.core.store import Store
from mdclust.stages.embed import embed


def run(*args, env=None, timeout=300, **kw):
    return subprocess.run([MDCLUST, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, **kw)


def error_line(res) -> str:
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mdclust: error: "), res.stderr
    return lines[0]


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
