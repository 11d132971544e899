"""Ground-truth labels: a CSV with a `path` column and one column per aspect."""

from __future__ import annotations

import csv
from pathlib import Path

from .errors import MdclustError


def read_labels_csv(csv_path: str | Path, root: Path | None = None) -> dict[str, dict[str, str]]:
    """Return {aspect: {relative_path: value}}; absolute paths are made relative to ``root``."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise MdclustError(f"labels file not found: {csv_path}")
    with open(csv_path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        fields = [f.strip() for f in (reader.fieldnames or [])]
        if not fields or fields[0] != "path":
            raise MdclustError(f"{csv_path}: the first column must be 'path' "
                               f"(found {', '.join(fields) or 'nothing'})")
        aspects = [f for f in fields[1:] if f]
        if not aspects:
            raise MdclustError(f"{csv_path}: no aspect columns after 'path'")
        out: dict[str, dict[str, str]] = {a: {} for a in aspects}
        for line, row in enumerate(reader, start=2):
            row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
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
                if row.get(a, ""):
                    out[a][path] = row[a]
    return out
