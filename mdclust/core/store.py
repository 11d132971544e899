"""The HDF5 store: the only module that imports h5py.

Every write goes through :meth:`Store.transaction`, which builds a complete new file next to the
old one and swaps it in with ``os.replace``. A crash at any point therefore leaves either the old
file or the new one, never a half-written mix (HDF5 itself offers no such guarantee for in-place
edits). See docs/store.md for the layout.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
import stat
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Union

import h5py
import numpy as np

from mdclust import __version__
from mdclust.core.errors import MdclustError

SCHEMA_VERSION = 1
# Upgrade steps, as in simonw/llm's migrations: MIGRATIONS[v] turns a schema-v store into
# schema v+1 inside one transaction. Stores of an older schema are upgraded on first use.
MIGRATIONS: dict[int, Callable[["Transaction"], None]] = {}
SCHEMA_ATTR = "mdclust_schema"
DEFAULT_STORE = "mdclust.h5"
LOCK_TIMEOUT_ENV = "MDCLUST_LOCK_TIMEOUT"
LOCK_TIMEOUT = 600.0  # seconds a command waits for another one's lock before giving up
LOCK_NOTE_AFTER = 1.0  # seconds before saying who holds the lock
_JSON_PREFIX = "json:"
_HELD: dict[str, int] = {}  # lock files this process holds, with their nesting depth
StoreLike = Union["Store", str, os.PathLike, None]  # what every stage accepts as its store


def as_store(store: StoreLike) -> Store:
    """A Store for a Store, a path, or None (the default store): every stage takes any."""
    if isinstance(store, Store):
        return store
    if store is not None and not isinstance(store, (str, os.PathLike)):
        raise MdclustError(f"store must be a Store or a path, not {type(store).__name__}")
    return Store(store)


def default_store_path() -> Path:
    return Path(os.environ.get("MDCLUST_STORE") or DEFAULT_STORE)


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class Group:
    """A group read back from the store: its datasets as arrays/lists and its attributes."""

    data: dict[str, Any] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)


def _encode_attr(value: Any) -> Any:
    if isinstance(value, (dict, list, tuple)) or value is None:
        return _JSON_PREFIX + json.dumps(value)
    return value


def _decode_attr(value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str) and value.startswith(_JSON_PREFIX):
        return json.loads(value[len(_JSON_PREFIX):])
    if isinstance(value, np.generic):
        return value.item()
    return value


def _read_dataset(ds: h5py.Dataset) -> Any:
    if h5py.check_string_dtype(ds.dtype) is not None:
        return [str(s) for s in ds.asstr()[()]]
    return ds[()]


def _write_dataset(group: h5py.Group, name: str, value: Any) -> None:
    if isinstance(value, np.ndarray) and value.dtype.kind not in "OUS":
        chunks = value.ndim > 0 and value.size > 0
        group.create_dataset(name, data=value, chunks=True if chunks else None)
        return
    values = [str(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    group.create_dataset(name, data=np.array(values, dtype=object),
                         dtype=h5py.string_dtype("utf-8"))


def _read_group(g: h5py.Group) -> Group:
    out = Group(attrs={k: _decode_attr(v) for k, v in g.attrs.items()})
    for name, item in g.items():
        if isinstance(item, h5py.Dataset):
            out.data[name] = _read_dataset(item)
    return out


class _Snapshot:
    """Read access to an open file; shared by Store (own handle) and Transaction (under lock)."""

    def __init__(self, f: h5py.File | None):
        self._f = f

    def has(self, path: str) -> bool:
        return self._f is not None and path in self._f

    def read_group(self, path: str) -> Group | None:
        with _damaged(self._f, path):
            if not self.has(path):
                return None
            return _read_group(self._f[path])

    def children(self, path: str = "/") -> list[str]:
        with _damaged(self._f, path):
            if not self.has(path):
                return []
            return sorted(self._f[path].keys())

    def attrs(self, path: str = "/") -> dict[str, Any]:
        with _damaged(self._f, path):
            if not self.has(path):
                return {}
            return {k: _decode_attr(v) for k, v in self._f[path].attrs.items()}

    def shape(self, path: str) -> tuple[int, ...] | None:
        with _damaged(self._f, path):
            return tuple(self._f[path].shape) if self.has(path) else None


@contextlib.contextmanager
def _damaged(f, path: str) -> Iterator[None]:
    """h5py reports a damaged file as OSError/KeyError/RuntimeError from deep inside; say it
    in one line, naming the file and the group."""
    try:
        yield
    except (OSError, KeyError, RuntimeError, ValueError) as exc:
        name = getattr(f, "filename", "the store")
        first = " ".join(str(exc).split())[:160]
        raise MdclustError(f"cannot read {path} from {name}: {first}; the file may be damaged "
                           "(restore a copy, or embed again into a new store)") from exc


class Transaction(_Snapshot):
    """Collects group replacements and deletions; applied atomically on commit."""

    def __init__(self, f: h5py.File | None):
        super().__init__(f)
        self._puts: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
        self._deletes: set[str] = set()

    def put_group(self, path: str, data: dict[str, Any], attrs: dict[str, Any] | None = None,
                  provenance: bool = True) -> None:
        """Replace the group at ``path`` (and everything below it) with these datasets."""
        path = path.strip("/")
        full_attrs = dict(attrs or {})
        self._deletes.discard(path)
        if self._same(path, data, full_attrs):
            self._puts.pop(path, None)  # nothing changes: no reason to rewrite the file
            return
        if provenance:
            full_attrs.setdefault("mdclust_version", __version__)
            full_attrs.setdefault("time", now_iso())
        self._puts[path] = (data, full_attrs)

    def _same(self, path: str, data: dict[str, Any], attrs: dict[str, Any]) -> bool:
        """Whether the stored group already holds exactly these datasets and attributes
        (provenance aside) and nothing below it."""
        if not self.has(path) or not isinstance(self._f[path], h5py.Group):
            return False
        g = self._f[path]
        if set(g.keys()) != set(data):
            return False
        old = {k: _decode_attr(v) for k, v in g.attrs.items()
               if k not in ("time", "mdclust_version")}
        new = {k: _decode_attr(_encode_attr(v)) for k, v in attrs.items()
               if k not in ("time", "mdclust_version")}
        if old != new:
            return False
        for name, value in data.items():
            ds = g[name]
            if not isinstance(ds, h5py.Dataset):
                return False
            stored = _read_dataset(ds)
            if isinstance(stored, list):
                fresh = value.tolist() if isinstance(value, np.ndarray) else list(value)
                if stored != [str(v) for v in fresh]:
                    return False
            else:
                fresh = np.asarray(value)
                if stored.shape != fresh.shape or stored.dtype != fresh.dtype or \
                        not np.array_equal(stored, fresh):
                    return False
        return True

    def delete(self, path: str) -> None:
        path = path.strip("/")
        self._puts.pop(path, None)
        self._deletes.add(path)

    def touch(self) -> None:
        """Rewrite the file even without group changes (the root attributes are refreshed)."""
        self._touched = True

    @property
    def dirty(self) -> bool:
        return bool(self._puts or self._deletes or getattr(self, "_touched", False))

    def _write(self, dst: h5py.File) -> None:
        skip = set(self._puts) | self._deletes
        if self._f is not None:
            for key, value in self._f.attrs.items():
                dst.attrs[key] = value
            _copy_except(self._f, dst, "", skip)
        dst.attrs[SCHEMA_ATTR] = SCHEMA_VERSION
        dst.attrs["mdclust_version"] = __version__
        dst.attrs.setdefault("created", now_iso())
        for path, (data, attrs) in sorted(self._puts.items()):
            g = dst.require_group(path)
            for key, value in attrs.items():
                g.attrs[key] = _encode_attr(value)
            for name, value in data.items():
                _write_dataset(g, name, value)


def _copy_except(src: h5py.Group, dst: h5py.Group, prefix: str, skip: set[str]) -> None:
    for name, item in src.items():
        full = f"{prefix}{name}"
        if full in skip:
            continue
        if isinstance(item, h5py.Group) and any(s.startswith(full + "/") for s in skip):
            sub = dst.require_group(name)
            for key, value in item.attrs.items():
                sub.attrs[key] = value
            _copy_except(item, sub, full + "/", skip)
        else:
            src.copy(item, dst, name=name)


class Store:
    """An mdclust HDF5 store at ``path`` (created on the first write)."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path is not None else default_store_path()

    # -- reading -----------------------------------------------------------------------------
    def exists(self) -> bool:
        return self.path.exists()

    def validate(self) -> None:
        """Raise MdclustError if the file is not a store this version can read; upgrade a store
        of an older schema in place (atomically, like every write)."""
        with self._open_read() as f:
            schema = int(f.attrs[SCHEMA_ATTR]) if f is not None else SCHEMA_VERSION
        if schema < SCHEMA_VERSION:
            self.upgrade()

    def upgrade(self) -> int:
        """Apply the migrations from the file's schema to SCHEMA_VERSION; returns steps run."""
        with self.transaction() as txn:
            version = int(txn.attrs("/").get(SCHEMA_ATTR, SCHEMA_VERSION))
            steps = 0
            while version < SCHEMA_VERSION:
                if version not in MIGRATIONS:
                    raise MdclustError(f"no upgrade from store schema {version}; "
                                       "export your results and start a new store")
                MIGRATIONS[version](txn)
                version += 1
                steps += 1
            txn.touch()
        return steps

    @contextlib.contextmanager
    def _open_read(self) -> Iterator[h5py.File | None]:
        if not self.path.exists():
            yield None
            return
        if self.path.is_dir():
            raise MdclustError(f"{self.path} is a directory, not an mdclust store")
        if not h5py.is_hdf5(self.path):
            raise MdclustError(f"{self.path} is not an mdclust store (not an HDF5 file); "
                               "choose another path with --store")
        try:
            f = h5py.File(self.path, "r")
        except OSError as exc:
            raise MdclustError(f"cannot open store {self.path}: {exc}") from exc
        try:
            try:
                schema = f.attrs.get(SCHEMA_ATTR)
                schema = None if schema is None else int(schema)
            except (OSError, KeyError, RuntimeError, TypeError, ValueError) as exc:
                raise MdclustError(f"{self.path}: its schema attribute is unreadable or not a "
                                   "number; the file is damaged or not an mdclust store") \
                    from exc
            if schema is None:
                raise MdclustError(f"{self.path} is an HDF5 file but not an mdclust store "
                                   "(no schema attribute); choose another path with --store")
            if schema > SCHEMA_VERSION:
                raise MdclustError(f"{self.path} has store schema {schema}, newer than this "
                                   f"mdclust {__version__} understands ({SCHEMA_VERSION}); "
                                   "upgrade mdclust")
            yield f
        finally:
            f.close()

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[_Snapshot]:
        """A consistent read-only view; keep it short-lived."""
        with self._open_read() as f:
            yield _Snapshot(f)

    def read_group(self, path: str) -> Group | None:
        with self.snapshot() as s:
            return s.read_group(path)

    def children(self, path: str = "/") -> list[str]:
        with self.snapshot() as s:
            return s.children(path)

    def attrs(self, path: str = "/") -> dict[str, Any]:
        with self.snapshot() as s:
            return s.attrs(path)

    # -- writing -----------------------------------------------------------------------------
    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    @property
    def journal_dir(self) -> Path:
        """Where long-running stages commit batches between store rewrites."""
        return self.path.with_name(self.path.name + ".journal")

    def check_writable(self) -> None:
        """Fail now, with one line, if this store cannot be written: stages call it before
        their long work instead of finding out at commit."""
        folder = self.path.parent
        if not folder.is_dir():
            return  # made on the first write; stages that need an existing store say so
        try:
            with open(self.lock_path, "a"):
                pass
        except OSError as exc:
            raise MdclustError(f"cannot write the store {self.path}: {exc.strerror or exc} "
                               f"({folder}); choose another --store") from exc
        if self.path.exists() and not self.path.stat().st_mode & 0o222:
            raise MdclustError(f"the store {self.path} is read-only (mode "
                               f"{stat.S_IMODE(self.path.stat().st_mode):o}); make it writable "
                               "(chmod u+w) to change it, or copy it")

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """The store's exclusive lock. A held lock is waited for (after a second, stderr says
        which process holds it) for at most $MDCLUST_LOCK_TIMEOUT seconds (600), then exit 2.
        Re-entrant within a process, so a stage can hold it across its own transactions."""
        key = str(self.lock_path.resolve())
        if _HELD.get(key):
            _HELD[key] += 1
            try:
                yield
            finally:
                _HELD[key] -= 1
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MdclustError(f"cannot create the store's folder {self.path.parent}: "
                               f"{exc.strerror or exc}") from exc
        self.check_writable()
        timeout = _lock_timeout()
        with open(self.lock_path, "a+") as fh:
            start, noted = time.monotonic(), False
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    waited = time.monotonic() - start
                    if waited >= timeout:
                        raise MdclustError(
                            f"the store {self.path} is locked by {self._holder()}; gave up "
                            f"after {waited:.0f} s (${LOCK_TIMEOUT_ENV} sets the wait)") from None
                    if not noted and waited >= LOCK_NOTE_AFTER:
                        sys.stderr.write(f"mdclust: waiting for the lock on {self.path} held "
                                         f"by {self._holder()}\n")
                        noted = True
                    time.sleep(0.05)
            fh.seek(0)
            fh.truncate()
            fh.write(f"{os.getpid()}\n")
            fh.flush()
            _HELD[key] = 1
            try:
                yield
            finally:
                _HELD.pop(key, None)
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _holder(self) -> str:
        try:
            pid = self.lock_path.read_text().strip()
        except OSError:
            pid = ""
        return f"PID {pid}" if pid.isdigit() else "another mdclust command"

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """Read-modify-write under an exclusive lock; the new file replaces the old atomically.

        If the body raises, nothing is written.
        """
        with self.lock(), self._open_read() as src:
            # Under the lock no other writer is active, so any temp file is a killed commit's.
            for stale in self.path.parent.glob(f".{self.path.name}.tmp-*"):
                stale.unlink(missing_ok=True)
            txn = Transaction(src)
            yield txn
            if not txn.dirty and src is not None:
                return
            tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
            try:
                with h5py.File(tmp, "w") as dst:
                    txn._write(dst)
                if src is not None:
                    _copy_owner_and_mode(self.path, tmp)
                _fsync_file(tmp)
                os.replace(tmp, self.path)
                _fsync_dir(self.path.parent)
            except OSError as exc:  # disk full, file too large, I/O error: the old file stays
                raise MdclustError(f"cannot write the store {self.path}: "
                                   f"{exc.strerror or ' '.join(str(exc).split())[:160]}; "
                                   "nothing was changed") from exc
            finally:
                tmp.unlink(missing_ok=True)


def _lock_timeout() -> float:
    raw = os.environ.get(LOCK_TIMEOUT_ENV)
    try:
        return float(raw) if raw else LOCK_TIMEOUT
    except ValueError:
        raise MdclustError(f"${LOCK_TIMEOUT_ENV} must be a number of seconds, not {raw!r}") \
            from None


def _copy_owner_and_mode(old: Path, new: Path) -> None:
    """The rewritten file keeps the old one's permissions (a private store stays private)."""
    st = old.stat()
    with contextlib.suppress(PermissionError):  # only root may give a file away
        os.chown(new, st.st_uid, st.st_gid)
    os.chmod(new, stat.S_IMODE(st.st_mode))


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        _fsync_file(path)
