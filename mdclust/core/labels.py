"""Ground-truth labels: a CSV with a `path` column and one column per aspect."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from mdclust.core.errors import MdclustError


def _rows(csv_path: Path):
    """The CSV's rows (lists of cells), with one-line errors for what the csv module would raise
    as a traceback or read silently wrong."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            text = fh.read()
    except UnicodeDecodeError as exc:
        raise MdclustError(f"{csv_path} is not UTF-8 text (byte {exc.start}); save it as "
                           "UTF-8") from exc
    except OSError as exc:
        raise MdclustError(f"cannot read {csv_path}: {exc.strerror or exc}") from exc
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise MdclustError(f"{csv_path}:{line}: a NUL byte; this is not a text CSV")
    try:
        return list(csv.reader(io.StringIO(text)))
    except csv.Error as exc:
        raise MdclustError(f"{csv_path}: not a valid CSV ({exc})") from exc


def read_labels_csv(csv_path: str | Path, root: Path | None = None) -> dict[str, dict[str, str]]:
    """Return {aspect: {relative_path: value}}; absolute paths are made relative to ``root``.
    A row with more cells than the header, a repeated column name, or one path given two
    different values are errors (each would silently change what is measured)."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise MdclustError(f"labels file not found: {csv_path}")
    rows = _rows(csv_path)
    fields = [f.strip() for f in (rows[0] if rows else [])]
    if not fields or fields[0] != "path":
        raise MdclustError(f"{csv_path}: the first column must be 'path' "
                           f"(found {', '.join(fields) or 'nothing'})")
    aspects = [f for f in fields[1:] if f]
    if not aspects:
        raise MdclustError(f"{csv_path}: no aspect columns after 'path'")
    repeated = sorted({f for f in fields if f and fields.count(f) > 1})
    if repeated:
        raise MdclustError(f"{csv_path}: column {repeated[0]!r} appears twice in the header")
    out: dict[str, dict[str, str]] = {a: {} for a in aspects}
    for line, cells in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in cells):
            continue
        if len(cells) > len(fields):
            raise MdclustError(f"{csv_path}:{line}: {len(cells)} cells but the header has "
                               f"{len(fields)} columns")
        row = {f: c.strip() for f, c in zip(fields, cells)}
        path = row.get("path", "")
        if not path:
            raise MdclustError(f"{csv_path}:{line}: empty path")
        p = Path(path)
        if p.is_absolute() and root is not None:
            try:
                path = p.resolve().relative_to(root.resolve()).as_posix()
            except ValueError:
                pass
        path = Path(path).as_posix()
        for a in aspects:
            value = row.get(a, "")
            if not value:
                continue
            if out[a].get(path, value) != value:
                raise MdclustError(f"{csv_path}:{line}: {path} has {a} {value!r} here and "
                                   f"{out[a][path]!r} on an earlier row")
            out[a][path] = value
    return out
