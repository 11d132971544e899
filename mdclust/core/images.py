"""Finding, hashing and decoding image files."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

from mdclust.core import shards
from mdclust.core.errors import BadInput

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)
MAX_PIXELS_ENV = "MDCLUST_MAX_PIXELS"
# A folder holding this file was written by mdclust (a report); scanning skips it.
OWN_FOLDER_MARKER = ".mdclust-report"
# What a store keeps beside its entry file: never part of the collection.
STORE_FOLDER_SUFFIXES = (".h5.data", ".h5.journal", ".h5.checkpoints")


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the collection root, POSIX separators
    size: int
    mtime: float


def discover(root: str | os.PathLike, problems: list[tuple[str, str]] | None = None,
             meta: dict[str, str] | None = None) -> list[FileEntry]:
    """Image-like files under ``root`` (recursive, by extension), sorted by relative path;
    the image members of tar shards too (core/shards.py: ``shard.tar/KEY.jpg``, the shard's
    mtime as theirs), their ``KEY.txt``/``KEY.json`` text going into ``meta``.

    Sorting by the POSIX relative path keeps the order identical across file systems and runs,
    which keeps stored row order and k-means seeds reproducible. Files that cannot be taken
    (a name that is not UTF-8, which HDF5 cannot store; a broken symbolic link) are appended
    to ``problems`` as (printable path, reason).
    """
    root = Path(root)
    found: list[FileEntry] = []
    for dirpath, dirnames, filenames in os.walk(root):
        if OWN_FOLDER_MARKER in filenames:
            dirnames[:] = []  # a report's thumbnails would come back as a second copy
            continue
        dirnames[:] = [d for d in dirnames
                       if not d.startswith(".") and not d.endswith(STORE_FOLDER_SUFFIXES)]
        for name in filenames:
            if not name.startswith(".") and shards.is_shard(name):
                _shard_entries(root, Path(dirpath) / name, found, problems, meta)
                continue
            if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            full = Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            try:
                rel.encode("utf-8")
            except UnicodeEncodeError:  # undecodable bytes arrive as surrogates
                _note(problems, rel, "file name is not valid UTF-8; rename the file")
                continue
            try:
                st = full.stat()
            except OSError as exc:
                reason = "broken symbolic link" if full.is_symlink() else \
                    f"cannot read: {exc.strerror or exc}"
                _note(problems, rel, reason)
                continue
            found.append(FileEntry(rel, st.st_size, st.st_mtime))
    found.sort(key=lambda e: e.path)
    return found


def _shard_entries(root: Path, shard: Path, found: list, problems, meta) -> None:
    rel = shard.relative_to(root).as_posix()
    try:
        rel.encode("utf-8")
        mtime = shard.stat().st_mtime
        members, text = shards.members(shard, IMAGE_EXTENSIONS)
    except UnicodeEncodeError:
        _note(problems, rel, "file name is not valid UTF-8; rename the file")
        return
    except OSError as exc:
        _note(problems, rel, f"cannot read the shard: {exc.strerror or exc}")
        return
    for name, size in members:
        found.append(FileEntry(f"{rel}/{name}", size, mtime))
        if meta is not None and name in text:
            meta[f"{rel}/{name}"] = text[name]


def _note(problems: list | None, rel: str, reason: str) -> None:
    if problems is not None:
        shown = rel.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        problems.append((shown, reason))


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    member = shards.split(path)
    if member is not None:
        return hashlib.sha256(shards.read_member(*member)).hexdigest()
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _to_8bit(im):
    """Greyscale 16-bit, 32-bit and float images as 8-bit: Pillow's convert("RGB") clips them
    (a 16-bit PNG turns white, a float TIFF black). 16-bit data maps 0..65535 to 0..255;
    floats in [0, 1] scale by 255; any other range is stretched to 0..255."""
    import numpy as np
    from PIL import Image

    a = np.asarray(im, dtype=np.float64)
    if not np.isfinite(a).all():
        a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(a.min()), float(a.max())
    if im.mode.startswith("I") and lo >= 0 and hi <= 65535:
        a = a / 257.0
    elif im.mode == "F" and lo >= 0 and hi <= 1:
        a = a * 255.0
    elif hi > lo:
        a = (a - lo) / (hi - lo) * 255.0
    else:
        a = np.zeros_like(a)
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), mode="L")


def max_pixels() -> int | None:
    """The largest image (width × height) that is decoded: $MDCLUST_MAX_PIXELS, else Pillow's
    own limit (89,478,485 unless a caller changed ``PIL.Image.MAX_IMAGE_PIXELS``); None for
    none. Raises BadInput for a value that is not a positive whole number."""
    value = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not value:
        from PIL import Image

        return Image.MAX_IMAGE_PIXELS
    if not value.isdigit() or int(value) < 1:
        raise BadInput(f"{MAX_PIXELS_ENV} must be a whole number of pixels, not {value!r}")
    return int(value)


_LIMIT_LOCK = threading.Lock()


@contextlib.contextmanager
def _pillow_limit(limit: int | None):
    """Pillow's decompression-bomb check at ``limit``, its warning raised instead of printed:
    Pillow warns on stderr between the limit and twice it (which would break the CLI's
    one-line promise) and raises only above twice it. Both mean "too large" here."""
    from PIL import Image

    with _LIMIT_LOCK, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, limit
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _mpx(pixels: int) -> str:
    return f"{pixels / 1e6:.3g} Mpx"


def too_large(exc: Exception, limit: int | None) -> str:
    """The skip reason for Pillow's decompression-bomb warning or error."""
    found = re.search(r"\((\d+) pixels\)", str(exc))
    size = f"{_mpx(int(found.group(1)))}, " if found else ""
    bound = f"the {_mpx(limit)} limit" if limit else "the limit"
    return f"too large: {size}above {bound} (${MAX_PIXELS_ENV} sets it)"


def load_rgb(path: str | os.PathLike):
    """Decode fully, apply the EXIF orientation, convert to RGB. Raises ValueError with a reason
    (an image above ``max_pixels()`` is "too large", never decoded)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    limit = max_pixels()
    try:
        member = shards.split(path)
        if member is not None:
            import io

            path = io.BytesIO(shards.read_member(*member))  # read from the shard, in memory
            if not path.getbuffer().nbytes:
                raise ValueError("empty file")
        elif os.path.getsize(path) == 0:
            raise ValueError("empty file")
        with _pillow_limit(limit), Image.open(path) as im:
            im.load()  # force the full decode so truncation is caught here, not later
            im = ImageOps.exif_transpose(im)
            if im.mode.startswith(("I", "F")):
                im = _to_8bit(im)
            return im.convert("RGB")
    except ValueError:
        raise
    except UnidentifiedImageError:
        raise ValueError("not an image (unrecognised format)") from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise ValueError(too_large(exc, limit)) from None
    except (OSError, SyntaxError) as exc:
        raise ValueError(f"corrupt or truncated image: {exc}") from None


def listed(list_file: str | os.PathLike,
           problems: list[tuple[str, str]] | None = None) -> tuple[Path, list[FileEntry]]:
    """(root, entries) for a list of image paths (`embed --from-list`): a text file, one path
    per line, or a CSV or Parquet file with a ``path`` column; relative paths are resolved
    against the list's folder. The root is the folder the paths share, entries are relative to
    it and sorted like ``discover``'s; listed files that are missing go to ``problems``."""
    from mdclust.core.pathlists import read_paths

    list_file = Path(list_file).expanduser()
    base = list_file.resolve().parent
    if not list_file.is_file():
        raise BadInput(f"list file not found: {list_file}")
    full: dict[str, None] = {}
    for p in read_paths(list_file):
        full.setdefault(os.path.normpath(p if os.path.isabs(p) else os.path.join(base, p)))
    if not full:
        raise BadInput(f"{list_file} lists no paths")
    names = list(full)
    root = Path(os.path.commonpath(names)) if len(names) > 1 else Path(names[0]).parent
    if str(root) in full:
        root = root.parent
    found = []
    for name in names:
        rel = Path(name).relative_to(root).as_posix()
        try:
            st = os.stat(name)
        except OSError as exc:
            _note(problems, rel, "listed but not found" if isinstance(exc, FileNotFoundError)
                  else f"cannot read: {exc.strerror or exc}")
            continue
        if not os.path.isfile(name):
            _note(problems, rel, "listed but not a file")
            continue
        found.append(FileEntry(rel, st.st_size, st.st_mtime))
    found.sort(key=lambda e: e.path)
    return root, found
