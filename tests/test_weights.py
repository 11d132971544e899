"""Weights from the Hugging Face hub: downloaded by default, never under --offline, and a quick
one-line failure without a network. Real `mdclust` processes against local sockets only: a
closed port, a listener that counts connections, and a minimal hub that serves a tiny model."""

import hashlib
import json
import os
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from conftest import MDCLUST, TINY, write_images

from mdclust.core.store import Store

HUB_REPO = "test/tiny"


@pytest.fixture
def folder(tmp_path):
    write_images(tmp_path / "imgs", 3, size=(24, 24))
    return tmp_path / "imgs"


def hub_env(tmp_path: Path, endpoint: str, **extra: str) -> dict[str, str]:
    """The test environment with downloads allowed, an empty cache and ``endpoint`` as hub."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE")}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(tmp_path / "hf-home"), **extra)
    return env


def embed(folder: Path, store: Path, env: dict[str, str], *args: str):
    t0 = time.perf_counter()
    proc = subprocess.run([MDCLUST, "embed", str(folder), "--store", str(store), "--workers",
                           "0", *args], env=env, capture_output=True, text=True, timeout=120)
    return proc, time.perf_counter() - t0


def error_line(proc) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Listener:
    """A TCP port that accepts and at once closes connections, counting them."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def listener():
    lst = Listener()
    yield lst
    lst.close()


@pytest.mark.slow
@pytest.mark.parametrize("model", ["ViT-B-32", f"hf-hub:{HUB_REPO}"])
def test_no_network_fails_within_10_s_with_one_line(tmp_path, folder, model):
    store = tmp_path / "s.h5"
    env = hub_env(tmp_path, f"http://127.0.0.1:{closed_port()}")
    proc, seconds = embed(folder, store, env, "--model", model)
    assert proc.returncode == 2 and proc.stdout == ""
    line = error_line(proc)
    assert "cannot download" in line and "no network?" in line
    assert "--pretrained /path" in line and "--model mdclust-tiny" in line
    assert seconds < 10
    assert not store.exists()
    assert not list((tmp_path / "hf-home").glob("hub/models--*/snapshots/*/*"))


@pytest.mark.slow
@pytest.mark.parametrize("how", ["--offline", "HF_HUB_OFFLINE=1"])
def test_offline_makes_no_connection(tmp_path, folder, listener, how):
    extra = {"HF_HUB_OFFLINE": "1"} if how == "HF_HUB_OFFLINE=1" else {}
    args = ["--offline"] if how == "--offline" else []
    store = tmp_path / "s.h5"
    proc, _ = embed(folder, store, hub_env(tmp_path, listener.url, **extra), "--model",
                    "ViT-B-32", *args)
    assert proc.returncode == 2
    line = error_line(proc)
    assert "not available offline" in line and "HF_HUB_OFFLINE" in line
    assert "--pretrained /path" in line and "--model mdclust-tiny" in line
    assert listener.connections == 0
    assert not store.exists()


def test_without_offline_the_hub_is_asked(tmp_path, folder, listener):
    """The counterpart of the test above: the same setup does reach the listener."""
    proc, seconds = embed(folder, tmp_path / "s.h5", hub_env(tmp_path, listener.url),
                          "--model", "ViT-B-32")
    assert proc.returncode == 2 and "cannot download" in error_line(proc)
    assert listener.connections >= 1
    assert seconds < 10


# -- a hub on localhost -------------------------------------------------------------------------
def tiny_hub_files() -> dict[str, bytes]:
    """open_clip's hf-hub layout of the tiny test model, with seeded random weights."""
    import open_clip
    import torch
    from safetensors.torch import save

    from mdclust.core.encoders import register_configs

    register_configs()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        state = open_clip.create_model(TINY).state_dict()
    config = json.loads((Path(__file__).parent / "model_configs" / f"{TINY}.json").read_text())
    return {"open_clip_config.json": json.dumps({"model_cfg": config}).encode(),
            "open_clip_model.safetensors": save({k: v.contiguous() for k, v in state.items()})}


class _HubHandler(BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    requests: list[str] = []

    def _headers(self) -> bytes | None:
        self.requests.append(f"{self.command} {self.path}")
        body = self.files.get(self.path.rsplit("/", 1)[-1])
        self.send_response(200 if body is not None else 404)
        if body is not None:  # what huggingface_hub reads from a file's HEAD answer
            self.send_header("X-Repo-Commit", "a" * 40)
            self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
        else:
            self.send_header("X-Error-Code", "EntryNotFound")
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        return body

    def do_HEAD(self):
        self._headers()

    def do_GET(self):
        body = self._headers()
        if body:
            self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def hub():
    _HubHandler.files, _HubHandler.requests = tiny_hub_files(), []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HubHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, _HubHandler
    server.shutdown()
    server.server_close()


@pytest.mark.slow
def test_download_into_the_hf_cache_then_load_from_it(tmp_path, folder, hub, listener):
    from mdclust.core.features import load_image_features
    from mdclust.stages.embed import embed as embed_api

    server, handler = hub
    endpoint = f"http://127.0.0.1:{server.server_port}"
    # TQDM_POSITION=-1 keeps huggingface_hub's bar on although stderr is not a terminal.
    proc, _ = embed(folder, tmp_path / "a.h5", hub_env(tmp_path, endpoint, TQDM_POSITION="-1"),
                    "--model", f"hf-hub:{HUB_REPO}")
    assert proc.returncode == 0, proc.stderr
    assert any(r.startswith("GET") and r.endswith("open_clip_model.safetensors")
               for r in handler.requests)
    assert "open_clip_model.safetensors" in proc.stderr and "100%" in proc.stderr  # the bar
    cached = list((tmp_path / "hf-home" / "hub").glob(
        "models--test--tiny/snapshots/*/open_clip_model.safetensors"))
    assert len(cached) == 1

    # Cached weights load without asking the hub (here a port that only counts connections).
    proc, _ = embed(folder, tmp_path / "b.h5", hub_env(tmp_path, listener.url),
                    "--model", f"hf-hub:{HUB_REPO}")
    assert proc.returncode == 0, proc.stderr
    assert listener.connections == 0

    # The downloaded weights were really loaded (open_clip would fall back to random weights).
    local = tmp_path / "w.safetensors"
    local.write_bytes(handler.files["open_clip_model.safetensors"])
    embed_api(folder, Store(tmp_path / "c.h5"), model=TINY, pretrained=str(local), workers=0)
    a, b, c = (load_image_features(Store(tmp_path / f"{n}.h5")) for n in "abc")
    assert a.paths == b.paths == c.paths
    np.testing.assert_allclose(a.vectors, c.vectors, atol=2e-3)
    np.testing.assert_array_equal(a.vectors, b.vectors)
