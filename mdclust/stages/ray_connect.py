"""Joining a Ray cluster at ``--address`` in bounded time, with one line when it fails.

Ray's own ``ray.init`` retries an address that is not a cluster for many minutes (a web server
such as the dashboard, a closed port, another service), printing retry lines on stderr
meanwhile. ``probe`` names the usual mistakes in seconds before Ray is asked; ``bounded`` caps
whatever is left.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from typing import Callable

from mdclust.core.errors import BadInput

# Seconds ray.init may take to join a cluster at --address: a real one answers in a few.
CONNECT_TIMEOUT = 15.0
CONNECT_TIMEOUT_ENV = "MDCLUST_RAY_CONNECT_TIMEOUT"


def connect_timeout() -> float:
    """Seconds ``ray.init`` may take to join a cluster ($MDCLUST_RAY_CONNECT_TIMEOUT)."""
    value = os.environ.get(CONNECT_TIMEOUT_ENV, "").strip()
    try:
        seconds = float(value) if value else CONNECT_TIMEOUT
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise BadInput(f"{CONNECT_TIMEOUT_ENV} must be a number of seconds, not {value!r}")
    return seconds


def bounded(init: Callable[[], object], timeout: float) -> None:
    """Run ``init`` for at most ``timeout`` seconds. Ray retries a server that is not
    its GCS for many minutes, printing its C++ core's retry lines straight to file descriptor
    2 meanwhile, so that descriptor points to /dev/null for the wait. A thread left behind
    blocks nothing: it is a daemon, and Ray's exit hook does not wait for it."""
    done: dict[str, BaseException | None] = {}

    def target() -> None:
        try:
            init()
            done["error"] = None
        except BaseException as exc:  # handed to the caller's thread
            done["error"] = exc

    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        thread = threading.Thread(target=target, name="mdclust-ray-init", daemon=True)
        thread.start()
        thread.join(timeout)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    if "error" not in done:
        raise ConnectionError(
            f"no Ray cluster answered within {timeout:g} s; is it the address `ray start "
            f"--head` printed (host:6379 by default)? {CONNECT_TIMEOUT_ENV} sets the wait")
    if done["error"] is not None:
        raise done["error"]


def _split(address: str) -> tuple[str, int] | None:
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit() or not host:
        return None  # "auto" and other forms: Ray's own lookup
    return host.strip("[]"), int(port)


def probe(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds when nothing listens at a host:port address, or a web server does (the
    dashboard's port 8265 is the usual mistake): Ray itself retries both for minutes."""
    if address.lower().startswith(("http://", "https://")):
        raise ValueError(f"{address} is a web address (the dashboard's?), not a cluster's; "
                         f"{_hint(address)}")
    where = _split(address)
    if where is None:
        return
    host, port = where
    try:
        conn = socket.create_connection(where, timeout=timeout)
    except OSError as exc:
        raise ConnectionError(f"nothing answers at {host}:{port} "
                              f"({exc.strerror or type(exc).__name__})") from exc
    with conn:
        if _answers_http(conn):
            raise ConnectionError(f"{host}:{port} answers HTTP: it is a web server (Ray's "
                                  f"dashboard, port 8265 by default?), not a Ray cluster; "
                                  f"{_hint(address)}")


def _hint(address: str) -> str:
    if address.startswith("ray://"):
        return "give the Ray client address (ray://host:10001 by default)"
    return "give the GCS address `ray start --head` printed (host:6379 by default)"


def _answers_http(conn: socket.socket) -> bool:
    """True when the server at ``conn`` answers an HTTP/1.0 request as a web server does.
    Ray's GCS and client server speak gRPC (HTTP/2), where the server speaks first (its
    SETTINGS frame comes at once), so they are never sent the request."""
    try:
        conn.settimeout(1.0)
        first = conn.recv(9)
        if first:
            return first.startswith(b"HTTP/")
        return False  # closed at once: not HTTP either; Ray says what it is
    except socket.timeout:
        pass
    except OSError:
        return False
    try:
        conn.settimeout(2.0)
        conn.sendall(b"GET / HTTP/1.0\r\nHost: mdclust-probe\r\n\r\n")
        return conn.recv(5).startswith(b"HTTP/")
    except OSError:
        return False
