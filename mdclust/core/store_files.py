"""Which data files a store owns, which it may delete, and what a missing one means.

A data file belongs to the entry file that wrote it: its name carries the writer's store id
(``<group.path>.<store id>.<random>.h5``) and so does its ``mdclust_owner`` attribute. A commit
deletes only files of its own id that neither the new entry file, nor the one it replaced,
nor any other entry file in the same folder (a copy, a renamed store) links to. An entry file
records its own name, so a copy (``cp s.h5 backup.h5``) or a move is recognised at its first
commit: a copy beside its original takes a new id and deletes nothing it shares; a moved one
keeps its id. See docs/store.md, "What you may do with the files".
"""

from __future__ import annotations

import contextlib
import re
import uuid
from pathlib import Path

import h5py

STORE_ID_ATTR = "mdclust_store_id"
ENTRY_ATTR = "mdclust_entry"  # the entry file's own name when it was last written
ADOPTED_ATTR = "mdclust_adopted"  # data files of an older store (no id in their name) it owns
OWNER_ATTR = "mdclust_owner"  # on each data file: the id of the store that wrote it
ID_LEN = 12
_OWNED = re.compile(r"\.([0-9a-f]{12})\.[0-9a-f]{12}\.h5$")


def new_store_id() -> str:
    return uuid.uuid4().hex[:ID_LEN]


def data_file_name(group_path: str, store_id: str) -> str:
    return f"{group_path.replace('/', '.')}.{store_id}.{uuid.uuid4().hex[:12]}.h5"


def owner_in_name(name: str) -> str | None:
    m = _OWNED.search(name)
    return m.group(1) if m else None


def links(f: h5py.File | None) -> set[str]:
    """The data files (names relative to the entry file's folder) an entry file links to."""
    found: set[str] = set()
    if f is None:
        return found

    def walk(g: h5py.Group) -> None:
        for name in g:
            link = g.get(name, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                found.add(link.filename)
            elif isinstance(link, h5py.HardLink) and isinstance(g[name], h5py.Group):
                walk(g[name])

    walk(f)
    return found


def entry_attrs(path: Path) -> dict | None:
    """The root attributes of the mdclust entry file at ``path``, or None for anything else."""
    try:
        if not path.is_file() or not h5py.is_hdf5(path):
            return None
        with h5py.File(path, "r") as f:
            if "mdclust_schema" not in f.attrs:
                return None
            return {k: f.attrs[k] for k in (STORE_ID_ATTR, ENTRY_ATTR) if k in f.attrs}
    except (OSError, ValueError, RuntimeError):
        return None


def identity(path: Path, attrs: dict) -> tuple[str, list[str]]:
    """(store id, adopted data files) under which the entry file at ``path`` (root attributes
    ``attrs``, decoded) writes.

    An entry file that records another name was copied or moved. If the file of that name
    beside it is a store of the same id, this one is a copy: it takes a new id and adopts
    nothing, so its commits never delete what the original owns (and the original's commits
    see its links and keep what it shares). Otherwise it was moved and keeps its id."""
    sid = attrs[STORE_ID_ATTR]
    recorded = attrs.get(ENTRY_ATTR)
    if recorded and recorded != path.name:
        original = entry_attrs(path.with_name(recorded))
        if original is not None and _decoded(original.get(STORE_ID_ATTR)) == sid:
            return new_store_id(), []
    return sid, list(attrs.get(ADOPTED_ATTR) or [])


def legacy_files(f: h5py.File, entry: Path, data_dir: Path) -> list[str]:
    """Data files of a store written before data files carried an owner (schema 2) that lie
    in its own data folder: it wrote them, and adopts them so that it can collect them."""
    out = []
    for name in links(f):
        file = entry.parent / name
        if file.parent == data_dir and owner_in_name(file.name) is None:
            out.append(file.name)
    return sorted(out)


def _decoded(value):
    return value.decode() if isinstance(value, bytes) else value


def linked_by_neighbours(entry: Path) -> set[Path]:
    """Data files that other entry files in the same folder link to (a copy, a renamed
    store, a backup): a commit must not delete them even when it owns them."""
    found: set[Path] = set()
    for other in entry.parent.iterdir():
        if other.name.startswith(".") or other.resolve() == entry.resolve():
            continue
        with contextlib.suppress(OSError, ValueError, RuntimeError):
            if not other.is_file() or not h5py.is_hdf5(other):
                continue
            with h5py.File(other, "r") as f:
                if "mdclust_schema" in f.attrs:
                    found.update((other.parent / n).resolve() for n in links(f))
    return found


def collect(entry: Path, data_dir: Path, store_id: str, adopted: list[str],
            keep: set[str]) -> int:
    """Delete the data files this store owns that nothing links to any more; returns how many.

    ``keep``: what the new entry file and the one it replaced link to (a reader that opened
    the old one just before the swap can still read its files)."""
    kept = {(entry.parent / k).resolve() for k in keep}
    data_dir = data_dir.resolve()
    folders = {data_dir} | {p.parent for p in kept}
    doomed = []
    for folder in folders:
        if not folder.is_dir():
            continue
        for file in folder.glob("*.h5"):
            mine = owner_in_name(file.name) == store_id or \
                (folder == data_dir and file.name in adopted)
            if mine and file.is_file() and file.resolve() not in kept:
                doomed.append(file)
    if not doomed:
        return 0
    shared = linked_by_neighbours(entry)
    removed = 0
    for file in doomed:
        if file.resolve() not in shared:
            file.unlink(missing_ok=True)
            removed += 1
    return removed


def missing(entry: Path, f: h5py.File) -> list[str]:
    """Links of the entry file whose data file is not there."""
    return sorted(n for n in links(f) if not (entry.parent / n).is_file())


def missing_message(entry: Path, f: h5py.File, gone: list[str]) -> str | None:
    """The one-line diagnosis of an entry file that was copied, moved or renamed without its
    data folder (None: some data files are simply missing; the group that needs one says so)."""
    recorded = _decoded(f.attrs.get(ENTRY_ATTR))
    folders = sorted({Path(n).parent.as_posix() for n in gone})
    own = entry.with_name(entry.name + ".data")
    if own.is_dir() and all((own / Path(n).name).is_file() for n in gone):
        old = folders[0]
        return (f"{entry} links to its data files in {old}/, but they are in {own.name}/ "
                f"(the store was renamed as a pair): rename the folder back "
                f"(mv {own} {entry.parent / old}); the links inside the entry file name the "
                "folder")
    if recorded and recorded != entry.name or len(gone) == len(links(f)):
        was = f" (it was written as {recorded})" if recorded and recorded != entry.name else ""
        return (f"{entry}{was} links to {len(gone)} data files in {', '.join(folders)}/ that "
                "are not beside it: the entry file was copied or moved without its data "
                "folder; copy or move the pair (the entry file and its .data folder)")
    return None


def _external_link(f: h5py.File, path: str) -> h5py.ExternalLink | None:
    """The first external link on the way to ``path`` (the group or one above it), if any."""
    g, parts = f, path.strip("/").split("/")
    for i, name in enumerate(parts):
        try:
            link = g.get(name, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                return link
            if link is None or i == len(parts) - 1:
                return None
            g = g[name]
        except (KeyError, OSError, RuntimeError, ValueError):
            return None
    return None


def file_of(f: h5py.File | None, path: str) -> str:
    """The file that holds ``path``: the data file an external link on the way points to, else
    the entry file."""
    if f is None:
        return "the store"
    link = _external_link(f, path)
    return str(Path(f.filename).parent / link.filename) if link is not None else f.filename


def dangling(f: h5py.File | None, path: str) -> str | None:
    """The missing data file if ``path`` (or a group above it) is an external link whose file
    is gone, else None."""
    link = _external_link(f, path) if f is not None else None
    if link is None or (Path(f.filename).parent / link.filename).is_file():
        return None
    return link.filename


# The command that makes a group again when its data file is gone (None: only embed, into a
# new store, since the image table and features are what every other stage is built on).
_REMAKE = {"images": None, "skipped": None, "features": None, "labels": None, "views": None,
           "candidates": "candidates", "filter": "filter", "clusterings": "cluster",
           "train": "train", "text_features": "cache"}


def gone_message(f: h5py.File, path: str, gone: str) -> str:
    """One line for a group whose data file is missing: which file, and the way out."""
    parts = path.strip("/").split("/")
    stage = _REMAKE.get(parts[2] if parts[0] == "interests" and len(parts) > 2 else parts[0])
    if stage is None:
        way = ("restore it from a backup of the store (entry file and .data folder), or embed "
               "the images into a new store (--store NEW.h5)")
    elif stage == "cache":
        way = "rerun the command: the text cache is encoded again"
    else:
        way = (f"restore it from a backup of the store, or run `mdclust {stage}` again to "
               "make it anew")
    return (f"{f.filename}: the data file {gone} that holds {path} is missing (deleted, or the "
            f"entry file was copied without its data folder); {way}")
