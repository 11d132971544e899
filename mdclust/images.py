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


def discover(root: str | os.PathLike) -> list[FileEntry]:
    """Image-like files under ``root`` (recursive, by extension), sorted by relative path.

    Sorting by the POSIX relative path keeps the order identical across file systems and runs,
    which keeps stored row order and k-means seeds reproducible.
    """
    root = Path(root)
    found: list[FileEntry] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            full = Path(dirpath) / name
            try:
                st = full.stat()
            except OSError:
                continue
            found.append(FileEntry(full.relative_to(root).as_posix(), st.st_size, st.st_mtime))
    found.sort(key=lambda e: e.path)
    return found


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def load_rgb(path: str | os.PathLike):
    """Decode fully, apply the EXIF orientation, convert to RGB. Raises ValueError with a reason."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        if os.path.getsize(path) == 0:
            raise ValueError("empty file")
        with Image.open(path) as im:
            im.load()  # force the full decode so truncation is caught here, not later
            im = ImageOps.exif_transpose(im)
            return im.convert("RGB")
    except ValueError:
        raise
    except UnidentifiedImageError:
        raise ValueError("not an image (unrecognised format)") from None
    except (OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"corrupt or truncated image: {exc}") from None
