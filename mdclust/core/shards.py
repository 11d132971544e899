"""WebDataset tar shards as part of an image folder (img2dataset's output: ``00000.tar`` holding
``KEY.jpg`` with ``KEY.txt`` / ``KEY.json`` beside it).

A member is named ``<shard path>/<member name>`` (``shards/00000.tar/000001.jpg``) everywhere
a file's relative path is: in the store, in exports, in the report. Members are read straight
from the shard, never extracted; each process keeps its shards open with their member index
(``tarfile`` finds a member of an uncompressed tar by seeking), so decoding workers read
only the bytes of the members they decode.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

SHARD_SUFFIX = ".tar"
SIDECARS = (".txt", ".json")  # a member's caption or label, kept as its metadata
# (pid, shard) -> (mtime, open tar, member index). Keyed by process too: a forked decoding
# worker inherits its parent's open files, whose shared offset two processes must not seek.
_open: dict[tuple[int, str], tuple[float, tarfile.TarFile, dict[str, tarfile.TarInfo]]] = {}


def is_shard(name: str) -> bool:
    return name.lower().endswith(SHARD_SUFFIX)


def split(path: str | os.PathLike) -> tuple[Path, str] | None:
    """(shard file, member name) when ``path`` names a member of a shard; None otherwise
    (a plain file, or nothing at all)."""
    p = Path(path)
    if p.is_file() or SHARD_SUFFIX not in str(p).lower():
        return None
    for parent in p.parents:
        if is_shard(parent.name) and parent.is_file():
            return parent, p.relative_to(parent).as_posix()
    return None


def _index(shard: Path) -> tuple[tarfile.TarFile, dict[str, tarfile.TarInfo]]:
    key = (os.getpid(), str(shard))
    mtime = shard.stat().st_mtime
    hit = _open.get(key)
    if hit is None or hit[0] != mtime:  # a rewritten shard: read its index again
        if hit is not None:
            hit[1].close()
        tar = tarfile.open(shard, "r:")
        _open[key] = (mtime, tar, {m.name: m for m in tar.getmembers() if m.isfile()})
    return _open[key][1], _open[key][2]


def read_member(shard: Path, name: str) -> bytes:
    """The bytes of one member (OSError when the shard or the member is missing or broken)."""
    try:
        tar, members = _index(shard)
        info = members.get(name)
        if info is None:
            raise FileNotFoundError(f"no member {name} in {shard}")
        fh = tar.extractfile(info)
        return fh.read() if fh is not None else b""
    except tarfile.TarError as exc:
        raise OSError(f"broken shard {shard.name}: {exc}") from exc


def members(shard: Path, image_suffixes) -> tuple[list[tuple[str, int]], dict[str, str]]:
    """(image members as (name, size) in shard order, {image member: its sidecar text}); a
    shard that cannot be read raises OSError."""
    try:
        with tarfile.open(shard, "r:") as tar:
            infos = [m for m in tar.getmembers() if m.isfile()]
            images = [(m.name, m.size) for m in infos
                      if Path(m.name).suffix.lower() in image_suffixes]
            wanted = {str(Path(name).with_suffix("")): name for name, _ in images}
            meta: dict[str, str] = {}
            for m in infos:
                stem, suffix = str(Path(m.name).with_suffix("")), Path(m.name).suffix.lower()
                if suffix in SIDECARS and stem in wanted and m.size < 1 << 20:
                    fh = tar.extractfile(m)
                    text = fh.read().decode("utf-8", "replace").strip() if fh else ""
                    if text:
                        meta[wanted[stem]] = text if wanted[stem] not in meta else \
                            meta[wanted[stem]] + "\n" + text
    except tarfile.TarError as exc:
        raise OSError(f"not a readable tar file: {exc}") from exc
    return images, meta
