"""Files that name images: a text file (one path per line), or a CSV or Parquet file with a
path column (`embed --from-list`, `embed --features --paths`)."""

from __future__ import annotations

from pathlib import Path

from mdclust.core.errors import BadInput

PATH_COLUMNS = ("path", "image_path", "filepath", "file")


def read_paths(path: Path) -> list[str]:
    """The paths a list file names, in its order (its first path column: PATH_COLUMNS)."""
    if not path.is_file():
        raise BadInput(f"paths file not found: {path}")
    if path.suffix.lower() == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise BadInput(f"reading {path} needs pyarrow: pip install 'mdclust[parquet]'") \
                from exc

        table = pq.read_table(path)
        col = next((c for c in PATH_COLUMNS if c in table.column_names), None)
        if col is None:
            raise BadInput(f"{path} has no path column ({', '.join(PATH_COLUMNS)})")
        return [str(x) for x in table.column(col).to_pylist()]
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".csv":
        import csv

        rows = list(csv.DictReader(text.splitlines()))
        col = next((c for c in PATH_COLUMNS if rows and c in rows[0]), None)
        if col is None:
            raise BadInput(f"{path} has no path column ({', '.join(PATH_COLUMNS)})")
        return [r[col] for r in rows]
    return [line.strip() for line in text.splitlines() if line.strip()]
