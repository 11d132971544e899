"""Finding, hashing and decoding image files."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the collection root, POSIX separators
    size: int
    mtime: float


def discover(root: str | os.PathLike,
             problems: list[tuple[str, str]] | None = None) -> list[FileEntry]:
    """Image-like files under ``root`` (recursive, by extension), sorted by relative path.

    Sorting by the POSIX relative path keeps the order identical across file systems and runs,
    which keeps stored row order and k-means seeds reproducible. Files that cannot be taken
    (a name that is not UTF-8, which HDF5 cannot store; a broken symbolic link) are appended
    to ``problems`` as (printable path, reason).
    """
    root = Path(root)
    found: list[FileEntry] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
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


def _note(problems: list | None, rel: str, reason: str) -> None:
    if problems is not None:
        shown = rel.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        problems.append((shown, reason))


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
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


def load_rgb(path: str | os.PathLike):
    """Decode fully, apply the EXIF orientation, convert to RGB. Raises ValueError with a reason."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        if os.path.getsize(path) == 0:
            raise ValueError("empty file")
        with Image.open(path) as im:
            im.load()  # force the full decode so truncation is caught here, not later
            im = ImageOps.exif_transpose(im)
            if im.mode.startswith(("I", "F")):
                im = _to_8bit(im)
            return im.convert("RGB")
    except ValueError:
        raise
    except UnidentifiedImageError:
        raise ValueError("not an image (unrecognised format)") from None
    except (OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"corrupt or truncated image: {exc}") from None
