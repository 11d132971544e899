"""The HDF5 store: with store_files.py, the only module that imports h5py.

The store is one entry file (``s.h5``) plus a folder of data files beside it (``s.h5.data/``).
A group whose datasets exceed ``EXTERNAL_MIN_BYTES`` lives in a data file of its own, written
once and never modified, and the entry file holds an HDF5 external link to it; small groups
and every attribute that describes the store stay in the entry file. h5py, h5dump and HDFView
follow the links, so the entry file opens like any HDF5 file.

Every write goes through :meth:`Store.transaction`: new large groups go to new data files
(fsynced), then a new entry file is built next to the old one, holding the small groups and
the links to the data files that did not change, and swapped in with ``os.replace``. A crash at
any point leaves either the old entry file or the new one, each with all the data files it
links to; a later commit removes the data files that this store wrote and that no entry file
beside it links to (store_files.py). A commit therefore costs what it writes plus the (small)
entry file, not the whole store. Every commit also folds in pending append batches of the
journal (the text cache), so no merge is left undone by a kill. See docs/store.md.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
import stat
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection, Iterator, Union

import h5py
import numpy as np

from mdclust import __version__
from mdclust.core import journal
from mdclust.core import store_files as sf
from mdclust.core.errors import MdclustError, MissingDataFile
from mdclust.core.rowfile import RowFile

SCHEMA_VERSION = 3
# Upgrade steps, as in simonw/llm's migrations: MIGRATIONS[v] turns a schema-v store into
# schema v+1 inside one transaction. Stores of an older schema are upgraded on first use.
# 1 -> 2: large groups move out of the entry file into data files; the commit that the upgrade
# runs does that as it copies the old file (Transaction._copy), so the step itself is empty.
# 2 -> 3: data files carry the id of the store that wrote them, and the entry file records its
# id and name; the commit assigns them and adopts the older data files in the store's own data
# folder (store_files.legacy_files), so this step is empty too. mdclust 0.2 refuses schema 3:
# its clean-up would delete the data files of other stores in the folder.
MIGRATIONS: dict[int, Callable[["Transaction"], None]] = {1: lambda txn: None,
                                                          2: lambda txn: None}
SCHEMA_ATTR = "mdclust_schema"
DEFAULT_STORE = "mdclust.h5"
LOCK_TIMEOUT_ENV = "MDCLUST_LOCK_TIMEOUT"
LOCK_TIMEOUT = 600.0  # seconds a command waits for another one's lock before giving up
LOCK_NOTE_AFTER = 1.0  # seconds before saying who holds the lock
_JSON_PREFIX = "json:"
# Groups larger than this go to a data file of their own; below it the entry file holds them
# (a rewrite of a 1 MiB group costs ~5 ms, and a file per tiny group would litter the folder).
EXTERNAL_MIN_BYTES = int(os.environ.get("MDCLUST_DATA_FILE_MIN_BYTES") or 1 << 20)
DATA_GROUP = "group"  # the path of the group inside its data file
FIXED_STRING_MAX = 512  # longer strings are stored variable-length (one would pad them all)
# Per thread: the lock files this thread holds (nesting depth) and its open transactions. A
# second handle on the same file in the same thread joins the open transaction instead of
# committing beside it (which the outer commit would undo); other threads wait on the flock.
class _Local(threading.local):
    def __init__(self):
        self.held: dict[str, int] = {}  # lock file -> nesting depth
        self.open: dict[str, "Transaction"] = {}  # lock file -> open outermost transaction


_LOCAL = _Local()
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
        return ds.asstr("utf-8")[()].tolist()
    return ds[()]


CHUNK_BYTES = 1 << 20  # a matrix is stored in chunks of whole rows, about this size


def _chunks(value: np.ndarray) -> tuple[int, ...] | bool | None:
    """Whole-row chunks for a matrix: every reader here takes blocks of rows, and h5py's own
    guess for (10M, 512) float16 is (39063, 4), 128 column strips that made a block read
    run at ~200 MB/s against ~900 MB/s for (1024, 512) (docs/benchmarks.md)."""
    if value.ndim == 0 or value.size == 0:
        return None
    if value.ndim == 1:
        return True
    row = value.itemsize * int(np.prod(value.shape[1:]))
    return (max(1, min(value.shape[0], CHUNK_BYTES // max(row, 1))), *value.shape[1:])


def _numeric(value: Any) -> bool:
    """An array of numbers, or a RowFile (a matrix on disk, copied in blocks of rows)."""
    return (isinstance(value, np.ndarray) and value.dtype.kind not in "OUS") or \
        isinstance(value, RowFile)


def _write_dataset(group: h5py.Group, name: str, value: Any) -> None:
    if isinstance(value, RowFile):
        chunks = _chunks(value)
        ds = group.create_dataset(name, shape=value.shape, dtype=value.dtype, chunks=chunks,
                                  fletcher32=chunks is not None)
        step = max(1, (64 << 20) // max(1, value.nbytes // max(1, len(value))))
        for i in range(0, len(value), step):
            ds[i:i + step] = value[i:i + step]
        return
    if isinstance(value, np.ndarray) and value.dtype.kind not in "OUS":
        chunks = _chunks(value)
        # fletcher32: a damaged chunk is an error on read, not silently wrong numbers
        group.create_dataset(name, data=value, chunks=chunks, fletcher32=chunks is not None)
        return
    values = [str(v).encode() for v in (value.tolist() if isinstance(value, np.ndarray)
                                         else value)]
    longest = max(map(len, values), default=1)
    if longest <= FIXED_STRING_MAX and values:
        # Fixed-length UTF-8 bytes, compressed: a million paths take ~1 MB instead of ~64 MB
        # as variable-length strings (whose heap HDF5 cannot compress).
        group.create_dataset(name, data=np.array(values, dtype=f"S{longest}"), chunks=True,
                             compression="gzip", compression_opts=1, shuffle=True,
                             fletcher32=True)
        return
    group.create_dataset(name, data=np.array([v.decode() for v in values], dtype=object),
                         dtype=h5py.string_dtype("utf-8"))


def _read_group(g: h5py.Group, only: Collection[str] | None = None) -> Group:
    out = Group(attrs={k: _decode_attr(v) for k, v in g.attrs.items()})
    for name, item in g.items():
        if isinstance(item, h5py.Dataset) and (only is None or name in only):
            out.data[name] = _read_dataset(item)
    return out


class _Snapshot:
    """Read access to an open file; shared by Store (own handle) and Transaction (under lock)."""

    def __init__(self, f: h5py.File | None):
        self._f = f

    def has(self, path: str) -> bool:
        """Whether the group or dataset is there; MissingDataFile when it is a link to a data
        file that is gone (h5py would say it is absent, and its stage would fail later)."""
        gone = sf.dangling(self._f, path)  # h5py says True for a link to a missing file
        if gone is not None:
            raise MissingDataFile(sf.gone_message(self._f, path, gone), path, gone)
        return self._f is not None and path in self._f

    def read_group(self, path: str, only: Collection[str] | None = None) -> Group | None:
        """The group's attributes and datasets (``only`` these, when given), or None."""
        with _damaged(self._f, path):
            if not self.has(path):
                return None
            return _read_group(self._f[path], only)

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

    def read_strings(self, path: str) -> list[str]:
        """One string dataset (e.g. images/path) without the rest of its group."""
        with _damaged(self._f, path):
            return _read_dataset(self._f[path]) if self.has(path) else []

    def chunks(self, path: str, rows: int = 65_536) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, array) for successive row blocks of a numeric dataset: reading a
        large matrix this way needs one block of memory beyond what the caller keeps."""
        with _damaged(self._f, path):
            ds = self._f[path]
            for start in range(0, ds.shape[0], rows):
                yield start, ds[start:start + rows]

    def file_of(self, path: str) -> str:
        """The file that holds ``path`` (its data file, or the entry file), for messages."""
        return sf.file_of(self._f, path)


def _same_numbers(ds: h5py.Dataset, value: np.ndarray, rows: int = 65_536) -> bool:
    """A stored numeric dataset equals ``value``, compared a block of rows at a time (a
    rerun at 10M images must not read 10 GB of text counterparts back whole to find out)."""
    if h5py.check_string_dtype(ds.dtype) is not None or ds.shape != value.shape \
            or ds.dtype != value.dtype:
        return False
    if not value.ndim:
        return bool(np.array_equal(ds[()], value))
    return all(np.array_equal(ds[i:i + rows], value[i:i + rows])
               for i in range(0, len(value), rows))


def _all_finite(values: np.ndarray, rows: int = 65_536) -> bool:
    # in row blocks: np.isfinite of 10M x 512 at once is a 5 GB temporary
    return all(np.isfinite(values[i:i + rows]).all() for i in range(0, len(values), rows)) \
        if values.ndim else bool(np.isfinite(values))


def check_finite(values: np.ndarray, what: str, where: str) -> np.ndarray:
    """Refuse NaN or infinite features (damaged bytes in a store without checksums, or bad
    input): k-means and SVD would fail deep inside, or, worse, finish on garbage."""
    if values.dtype.kind == "f" and not _all_finite(values):
        row = int(np.argwhere(~np.isfinite(values))[0][0])
        raise MdclustError(f"{what} in {where} hold non-finite values (NaN or infinity, row "
                           f"{row}): the file is damaged or was written from bad input; "
                           "restore it from a backup or compute it again")
    return values


@contextlib.contextmanager
def _damaged(f, path: str) -> Iterator[None]:
    """h5py reports a damaged file as OSError/KeyError/RuntimeError from deep inside (a failed
    fletcher32 checksum among them); say it in one line, naming the file and the group."""
    try:
        yield
    except MdclustError:
        raise
    except (OSError, KeyError, RuntimeError, ValueError) as exc:
        name = sf.file_of(f, path)
        first = " ".join(str(exc).split())[:160]
        raise MdclustError(f"cannot read {path} from {name}: {first}; the file is damaged "
                           "(restore it from a backup of the store, or compute it again "
                           "into a new store)") from exc


class Transaction(_Snapshot):
    """Collects group replacements and deletions; applied atomically on commit."""

    def __init__(self, f: h5py.File | None, data_dir: Path | None = None, store_id: str = ""):
        super().__init__(f)
        self._puts: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
        self._deletes: set[str] = set()
        self._data_dir = data_dir
        self._store_id = store_id
        self._entry_name, self._adopted = "", []
        self.written: list[Path] = []  # data files this commit made
        self.bytes_written = 0

    def pending(self, path: str) -> dict[str, Any] | None:
        """The datasets this transaction puts at ``path`` (None: it does not put it)."""
        put = self._puts.get(path.strip("/"))
        return dict(put[0]) if put else None

    def deleting(self, path: str) -> bool:
        return path.strip("/") in self._deletes

    def _join(self, child: "Transaction") -> None:
        """Take a nested transaction's changes (it commits with this one)."""
        for path in child._deletes:
            self.delete(path)
        for path, value in child._puts.items():
            self._deletes.discard(path)
            self._puts[path] = value
        if getattr(child, "_touched", False):
            self.touch()

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
        try:
            if not self.has(path) or not isinstance(self._f[path], h5py.Group):
                return False
        except MissingDataFile:
            return False  # replacing a group whose data file is gone is the way to repair it
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
            if _numeric(value):
                if not _same_numbers(ds, value):
                    return False
                continue
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
            self._copy(self._f, dst, "", skip)
        dst.attrs[SCHEMA_ATTR] = SCHEMA_VERSION
        dst.attrs["mdclust_version"] = __version__
        dst.attrs.setdefault("created", now_iso())
        dst.attrs[sf.STORE_ID_ATTR] = self._store_id
        dst.attrs[sf.ENTRY_ATTR] = self._entry_name
        if self._adopted:
            dst.attrs[sf.ADOPTED_ATTR] = _encode_attr(self._adopted)
        elif sf.ADOPTED_ATTR in dst.attrs:
            del dst.attrs[sf.ADOPTED_ATTR]
        for path, (data, attrs) in sorted(self._puts.items()):
            parent, _, name = path.rpartition("/")
            if _data_bytes(data) >= EXTERNAL_MIN_BYTES and self._data_dir is not None:
                with self._data_file(path) as (f, link):
                    _fill_group(f.create_group(DATA_GROUP), data, attrs)
                (dst.require_group(parent) if parent else dst)[name] = link
            else:
                _fill_group(dst.require_group(path), data, attrs)

    @contextlib.contextmanager
    def _data_file(self, path: str) -> Iterator[tuple[h5py.File, h5py.ExternalLink]]:
        """A new data file for the group at ``path`` and the link to it from the entry file;
        fsynced on exit, before the entry file that links to it is swapped in."""
        self._data_dir.mkdir(exist_ok=True)
        name = sf.data_file_name(path, self._store_id)
        file = self._data_dir / name
        with h5py.File(file, "w") as f:
            f.attrs[sf.OWNER_ATTR] = self._store_id
            yield f, h5py.ExternalLink(f"{self._data_dir.name}/{name}", f"/{DATA_GROUP}")
        _fsync_file(file)
        self.written.append(file)
        self.bytes_written += file.stat().st_size

    def _copy(self, src: h5py.Group, dst: h5py.Group, prefix: str, skip: set[str]) -> None:
        """Copy the old entry file's groups except those replaced or deleted: links to data
        files are copied as links (the data is not read); a large group still stored inside
        the entry file (a schema-1 store) moves to a data file of its own."""
        for name in src:
            full = f"{prefix}{name}"
            if full in skip:
                continue
            link = src.get(name, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                dst[name] = h5py.ExternalLink(link.filename, link.path)
                continue
            item = src[name]
            if not isinstance(item, h5py.Group):
                src.copy(item, dst, name=name)
            elif any(isinstance(v, h5py.Dataset) for v in item.values()) and \
                    not any(s.startswith(full + "/") for s in skip) and \
                    _stored_bytes(item) >= EXTERNAL_MIN_BYTES and self._data_dir is not None:
                with self._data_file(full) as (f, new_link):
                    src.copy(item, f, name=DATA_GROUP)
                dst[name] = new_link
            else:
                sub = dst.require_group(name)
                for key, value in item.attrs.items():
                    sub.attrs[key] = value
                self._copy(item, sub, full + "/", skip)


def _fill_group(g: h5py.Group, data: dict[str, Any], attrs: dict[str, Any]) -> None:
    for key, value in attrs.items():
        g.attrs[key] = _encode_attr(value)
    for name, value in data.items():
        _write_dataset(g, name, value)


def _data_bytes(data: dict[str, Any]) -> int:
    """Roughly what a group's datasets take on disk (strings: their bytes plus a heap entry)."""
    total = 0
    for value in data.values():
        if _numeric(value):
            total += value.nbytes
        else:
            total += sum(len(str(v)) + 16 for v in value)
    return total


def _stored_bytes(g: h5py.Group) -> int:
    return sum(v.id.get_storage_size() for v in g.values() if isinstance(v, h5py.Dataset))


data_files = sf.links  # the data files an entry file links to (relative to its folder)


class Store:
    """An mdclust HDF5 store at ``path`` (created on the first write)."""

    def __init__(self, path: str | os.PathLike | None = None):
        path = Path(path) if path is not None else default_store_path()
        if path.is_symlink():
            # Write beside the target: replacing the link itself would leave the real store
            # without the update and a regular file whose data links point nowhere.
            target = path.resolve()
            if not target.exists():
                raise MdclustError(f"the store {path} is a symbolic link to {target}, which "
                                   "does not exist; point --store at the real file")
            path = target
        self.path = path

    # -- reading -----------------------------------------------------------------------------
    def exists(self) -> bool:
        return self.path.exists()

    def validate(self) -> None:
        """Raise MdclustError if the file is not a store this version can read; upgrade a store
        of an older schema in place (atomically, like every write)."""
        with self._open_read() as f:
            schema = int(f.attrs[SCHEMA_ATTR]) if f is not None else SCHEMA_VERSION
            gone = sf.missing(self.path, f) if f is not None else []
            if gone:
                message = sf.missing_message(self.path, f, gone)
                if message:  # copied, moved or renamed without its data: say so now
                    raise MdclustError(message)
        if schema < SCHEMA_VERSION and self._can_write():
            self.upgrade()  # an older store that cannot be written is read as it is

    def _can_write(self) -> bool:
        try:
            self.check_writable()
        except MdclustError:
            return False
        return True

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

    def read_group(self, path: str, only: Collection[str] | None = None) -> Group | None:
        with self.snapshot() as s:
            return s.read_group(path, only)

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
    def data_dir(self) -> Path:
        """Where groups too large for the entry file live, one HDF5 file each."""
        return self.path.with_name(self.path.name + ".data")

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
        held = _LOCAL.held
        if held.get(key):
            held[key] += 1
            try:
                yield
            finally:
                held[key] -= 1
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
            held[key] = 1
            try:
                yield
            finally:
                held.pop(key, None)
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

        If the body raises, nothing is written. A transaction opened inside another one on the
        same file in the same thread (through this Store or another handle) joins it: its
        changes commit with the outer one, or not at all.
        """
        key = str(self.lock_path.resolve())
        outer = _LOCAL.open.get(key)
        if outer is not None:
            child = Transaction(outer._f, outer._data_dir, outer._store_id)
            yield child
            outer._join(child)
            self.last_commit = {"bytes_written": 0, "data_files_written": 0, "joined": True}
            return
        with self.lock(), self._open_read() as src:
            # Under the lock no other writer is active, so any temp file is a killed commit's.
            for stale in self.path.parent.glob(f".{self.path.name}.tmp-*"):
                stale.unlink(missing_ok=True)
            sid, adopted = self._identity(src)
            txn = Transaction(src, self.data_dir, sid)
            txn._entry_name, txn._adopted = self.path.name, adopted
            _LOCAL.open[key] = txn
            try:
                yield txn
            finally:
                _LOCAL.open.pop(key, None)
            folded = journal.fold(txn, self)
            if txn.dirty or src is None:
                self._commit(src, txn)
            journal.clear(self, folded)

    def _identity(self, src: h5py.File | None) -> tuple[str, list[str]]:
        if src is None:
            return sf.new_store_id(), []
        attrs = {k: _decode_attr(v) for k, v in src.attrs.items()}
        if not attrs.get(sf.STORE_ID_ATTR):  # a store written before data files had owners
            return sf.new_store_id(), sf.legacy_files(src, self.path, self.data_dir)
        return sf.identity(self.path, attrs)

    def _commit(self, src: h5py.File | None, txn: Transaction) -> None:
        before = data_files(src)
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        try:
            with h5py.File(tmp, "w") as dst:
                txn._write(dst)
                after = data_files(dst)
            if src is not None:
                _copy_owner_and_mode(self.path, tmp)
                for file in txn.written:
                    _copy_owner_and_mode(self.path, file)
            _fsync_file(tmp)
            if txn.written:
                _fsync_dir(self.data_dir)
            txn.bytes_written += tmp.stat().st_size
            os.replace(tmp, self.path)
            _fsync_dir(self.path.parent)
        except OSError as exc:  # disk full, file too large, I/O error: the old file stays
            for file in txn.written:
                file.unlink(missing_ok=True)
            raise MdclustError(f"cannot write the store {self.path}: "
                               f"{exc.strerror or ' '.join(str(exc).split())[:160]}; "
                               "nothing was changed") from exc
        finally:
            tmp.unlink(missing_ok=True)
        self.last_commit = {"bytes_written": txn.bytes_written,
                            "data_files_written": len(txn.written)}
        self.last_commit["data_files_removed"] = sf.collect(
            self.path, self.data_dir, txn._store_id, txn._adopted, before | after)


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
