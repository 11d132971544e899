"""What the generated worlds share: the ink colours, the grey background painter, the
``--values`` parser, the choice of values a set uses, and the labels.csv / vocabulary.json
writer. A world module supplies its vocabulary, a ``samples`` stream and a ``render``."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Callable, Iterator, Mapping

import numpy as np

from mdclust.core.errors import MdclustError

# Close pairs a user names apart (red/maroon, blue/navy, green/teal, yellow/olive) are on
# purpose; neutral greys and white are not colours here because backgrounds are grey.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35), "maroon": (120, 20, 35), "orange": (245, 125, 20),
    "brown": (135, 80, 40), "yellow": (235, 210, 25), "olive": (125, 125, 20),
    "lime": (150, 230, 40), "green": (40, 160, 50), "teal": (20, 125, 125),
    "cyan": (40, 215, 225), "blue": (35, 75, 215), "navy": (20, 30, 115),
    "purple": (135, 45, 180), "pink": (250, 145, 195), "magenta": (220, 40, 200),
    "black": (25, 25, 25),
}
BACKGROUNDS = ("plain", "striped", "dotted", "checkered", "grid", "diagonal", "wavy", "brick",
               "speckled", "crosshatched")


def parse_values(spec: str | Mapping[str, int | str] | None,
                 vocabulary: Mapping[str, list[str]],
                 defaults: Mapping[str, int]) -> dict[str, int]:
    """``"color=6,shape=all"`` (or a dict) -> values per aspect, ``defaults`` for the rest."""
    if spec is None or spec == "":
        items: dict = {}
    elif isinstance(spec, str):
        items = {}
        for part in spec.split(","):
            name, sep, value = part.partition("=")
            if not sep:
                raise MdclustError(f"--values takes aspect=number pairs, got {part.strip()!r}")
            items[name.strip()] = value.strip()
    else:
        items = dict(spec)
    out = dict(defaults)
    for aspect, value in items.items():
        if aspect not in vocabulary:
            raise MdclustError(f"--values: unknown aspect {aspect!r}; aspects: "
                               + ", ".join(vocabulary))
        full = len(vocabulary[aspect])
        if str(value) == "all":
            out[aspect] = full
            continue
        try:
            k = int(value)
        except ValueError:
            raise MdclustError(f"--values: {aspect}={value!r} is not a number or 'all'") from None
        if not 1 <= k <= full:
            raise MdclustError(f"--values: {aspect}={k} must be between 1 and {full} "
                               f"(the {aspect} vocabulary)")
        out[aspect] = k
    return out


def present_values(seed: int, values: Mapping[str, int],
                   vocabulary: Mapping[str, list[str]]) -> dict[str, list[str]]:
    """The values a set of this seed uses, per aspect, in vocabulary order."""
    rng = np.random.default_rng([seed, 1])
    out = {}
    for aspect, vocab in vocabulary.items():
        keep = set(rng.choice(len(vocab), size=values[aspect], replace=False).tolist())
        out[aspect] = [v for i, v in enumerate(vocab) if i in keep]
    return out


def draw_labels(make: Callable, vocabulary: Mapping[str, list[str]], n: int, seed: int,
                present: Mapping[str, list[str]] | None
                ) -> Iterator[tuple[object, np.random.Generator]]:
    """n independent draws of ``make(**labels)`` (each aspect uniform over its present values,
    aspects independent), each with its own render rng.

    The labels come from one stream and each image's nuisance from a stream of its own, so the
    labels of a seed do not depend on how (or whether) the images are drawn.
    """
    values = {a: list((present or vocabulary)[a]) for a in vocabulary}
    rng = np.random.default_rng(seed)
    for i in range(n):
        s = make(**{a: str(values[a][int(rng.integers(len(values[a])))]) for a in vocabulary})
        yield s, np.random.default_rng([seed, i])


def write_set(out_dir: str | Path, n: int, seed: int, size: int,
              values: str | Mapping[str, int | str] | None, *,
              vocabulary: Mapping[str, list[str]], defaults: Mapping[str, int],
              samples: Callable, render: Callable) -> Path:
    """Write n PNGs, labels.csv (path + one column per aspect) and vocabulary.json under
    ``out_dir`` for the world whose ``samples`` and ``render`` are given."""
    if n < 1:
        raise MdclustError("--n must be at least 1")
    if size < 16:
        raise MdclustError("--size must be at least 16 pixels")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise MdclustError(f"{out} exists and is not a folder")
    present = present_values(seed, parse_values(values, vocabulary, defaults), vocabulary)
    aspects = list(vocabulary)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    width = len(str(n - 1))
    for i, (s, rng) in enumerate(samples(n, seed, present)):
        name = f"{i:0{width}d}.png"
        render(s, rng, size).save(out / name)
        rows.append([name, *(s.labels()[a] for a in aspects)])
    with open(out / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", *aspects])
        w.writerows(rows)
    vocab = {a: {"vocabulary": vocabulary[a], "present": present[a]} for a in aspects}
    (out / "vocabulary.json").write_text(json.dumps(vocab, indent=1) + "\n")
    return out / "labels.csv"


def read_vocabulary(folder: str | Path) -> dict[str, dict[str, list[str]]]:
    """The ``vocabulary.json`` of a generated set."""
    path = Path(folder) / "vocabulary.json"
    if not path.is_file():
        raise MdclustError(f"{path} not found: generate the set with `mdclust datasets shapes` "
                           "(or `glyphs`)")
    return json.loads(path.read_text())


def _lines(draw, size: int, period: int, phase: int, width: int, ink, slope: int) -> None:
    """Parallel lines: slope 0 vertical, 2 horizontal, +1/-1 diagonal."""
    for p in range(-2 * size + phase, 2 * size, period):
        if slope == 0:
            draw.line((p, 0, p, size), fill=ink, width=width)
        elif slope == 2:
            draw.line((0, p, size, p), fill=ink, width=width)
        else:
            draw.line((p, 0, p + slope * size, size), fill=ink, width=width)


def paint_background(draw, kind: str, size: int, rng: np.random.Generator) -> None:
    """Fill a size×size canvas with a grey pattern of this kind (random level, period, phase)."""
    base = int(rng.integers(200, 246))
    draw.rectangle((0, 0, size, size), fill=(base,) * 3)
    ink = (int(base - rng.integers(45, 90)),) * 3
    period = int(rng.integers(size // 9, size // 5))
    phase = int(rng.integers(0, period))
    thin = max(2, period // 6)
    if kind == "striped":
        _lines(draw, size, period, phase, max(2, period // 3), ink, 0 if rng.random() < 0.5 else 2)
    elif kind == "diagonal":
        _lines(draw, size, period, phase, max(2, period // 3), ink, 1 if rng.random() < 0.5 else -1)
    elif kind == "grid":
        _lines(draw, size, period, phase, thin, ink, 0)
        _lines(draw, size, period, phase, thin, ink, 2)
    elif kind == "crosshatched":
        _lines(draw, size, period, phase, thin, ink, 1)
        _lines(draw, size, period, phase, thin, ink, -1)
    elif kind == "dotted":
        rad = max(2, period // 4)
        for y in range(phase, size + period, period):
            for x in range(phase, size + period, period):
                draw.ellipse((x - rad, y - rad, x + rad, y + rad), fill=ink)
    elif kind == "checkered":
        for j, y in enumerate(range(-phase, size, period)):
            for i, x in enumerate(range(-phase, size, period)):
                if (i + j) % 2 == 0:
                    draw.rectangle((x, y, x + period - 1, y + period - 1), fill=ink)
    elif kind == "wavy":
        xs = np.arange(0, size + 4, 4)
        amp = period / 4
        for y0 in range(-period + phase, size + period, period):
            ys = y0 + amp * np.sin(2 * math.pi * xs / (1.5 * period))
            draw.line(list(zip(xs.tolist(), ys.tolist())), fill=ink, width=max(2, period // 4))
    elif kind == "brick":
        for j, y in enumerate(range(-phase, size, period)):
            draw.line((0, y, size, y), fill=ink, width=thin)
            offset = (period if j % 2 else 0) - phase
            for x in range(offset, size, 2 * period):
                draw.line((x, y, x, y + period), fill=ink, width=thin)
    elif kind == "speckled":
        for x, y in rng.integers(0, size, (size * size // 40, 2)).tolist():
            rad = int(rng.integers(1, 3))
            draw.ellipse((x - rad, y - rad, x + rad, y + rad), fill=ink)

