"""Synthetic multi-aspect image sets: the same images, several independent ways to group them.

`shapes`: a coloured object (color) of some form (shape) on a patterned background
(background), with nuisance variation — position, size, rotation, shade, pixel noise and grey
distractor marks — so that each aspect must be read from the picture as a whole. It stands in for
the papers' Fruit/Card-style data; see docs/datasets.md.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import MdclustError

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (40, 160, 50),
    "blue": (35, 75, 215),
    "yellow": (235, 205, 20),
    "purple": (140, 45, 185),
    "orange": (245, 125, 20),
}
SHAPES = ("circle", "square", "triangle", "star", "cross")
BACKGROUNDS = ("plain", "striped", "dotted", "checkered")
ASPECTS = {"color": list(COLORS), "shape": list(SHAPES), "background": list(BACKGROUNDS)}


@dataclass(frozen=True)
class Sample:
    color: str
    shape: str
    background: str

    def labels(self) -> dict[str, str]:
        return {"color": self.color, "shape": self.shape, "background": self.background}


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if shape == "square":
        pts = [(math.cos(a), math.sin(a)) for a in np.arange(4) * math.pi / 2 + math.pi / 4]
    elif shape == "triangle":
        pts = [(math.cos(a), math.sin(a)) for a in np.arange(3) * 2 * math.pi / 3 - math.pi / 2]
    elif shape == "star":
        pts = [((1.0 if i % 2 == 0 else 0.42) * math.cos(a), (1.0 if i % 2 == 0 else 0.42)
                * math.sin(a)) for i, a in enumerate(np.arange(10) * math.pi / 5 - math.pi / 2)]
    elif shape == "cross":
        w = 0.34
        pts = [(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w),
               (-1, w), (-1, -w), (-w, -w)]
    else:
        raise ValueError(shape)
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in pts]


def _background(draw, kind: str, size: int, rng: np.random.Generator) -> None:
    base = int(rng.integers(200, 246))
    draw.rectangle((0, 0, size, size), fill=(base,) * 3)
    ink = (int(base - rng.integers(45, 90)),) * 3
    period = int(rng.integers(size // 9, size // 5))
    phase = int(rng.integers(0, period))
    if kind == "striped":
        width = max(2, period // 3)
        if rng.random() < 0.5:
            for x in range(-period + phase, size, period):
                draw.rectangle((x, 0, x + width, size), fill=ink)
        else:
            for y in range(-period + phase, size, period):
                draw.rectangle((0, y, size, y + width), fill=ink)
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


def render(sample: Sample, rng: np.random.Generator, size: int = 64):
    """One RGB PIL image of ``size`` pixels (drawn at 2x, then downsampled)."""
    from PIL import Image, ImageDraw

    big = size * 2
    img = Image.new("RGB", (big, big))
    draw = ImageDraw.Draw(img)
    _background(draw, sample.background, big, rng)
    for _ in range(int(rng.integers(1, 4))):  # grey distractor marks
        x0, y0 = rng.integers(0, big, 2)
        x1, y1 = np.clip(np.array([x0, y0]) + rng.integers(-big // 4, big // 4, 2), 0, big)
        g = int(rng.integers(60, 200))
        draw.line((int(x0), int(y0), int(x1), int(y1)), fill=(g, g, g),
                  width=int(rng.integers(1, 4)))
    r = big * rng.uniform(0.22, 0.34)
    cx, cy = (big / 2 + rng.uniform(-1, 1, 2) * (big / 2 - r - 2) * 0.7)
    shade = rng.uniform(0.8, 1.1)
    rgb = tuple(int(np.clip(c * shade + rng.integers(-15, 16), 0, 255))
                for c in COLORS[sample.color])
    if sample.shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=rgb)
    else:
        draw.polygon(_polygon(sample.shape, cx, cy, r, rng.uniform(0, 2 * math.pi)), fill=rgb)
    img = img.resize((size, size), Image.LANCZOS)
    arr = np.asarray(img, dtype=np.float32) + rng.normal(0, 6, (size, size, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def samples(n: int, seed: int = 0) -> Iterator[tuple[Sample, np.random.Generator]]:
    """n independent draws (aspects uniform and independent), each with its own render rng.

    The labels come from one stream and each image's nuisance from a stream of its own, so the
    labels of a seed do not depend on how (or whether) the images are drawn.
    """
    rng = np.random.default_rng(seed)
    for i in range(n):
        s = Sample(str(rng.choice(list(COLORS))), str(rng.choice(SHAPES)),
                   str(rng.choice(BACKGROUNDS)))
        yield s, np.random.default_rng([seed, i])


def generate_shapes(out_dir: str | Path, n: int = 3000, seed: int = 0, size: int = 64) -> Path:
    """Write n PNGs and labels.csv (path,color,shape,background) under ``out_dir``."""
    if n < 1:
        raise MdclustError("--n must be at least 1")
    if size < 16:
        raise MdclustError("--size must be at least 16 pixels")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    width = len(str(n - 1))
    for i, (s, rng) in enumerate(samples(n, seed)):
        name = f"{i:0{width}d}.png"
        render(s, rng, size).save(out / name)
        rows.append([name, s.color, s.shape, s.background])
    with open(out / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", *ASPECTS])
        w.writerows(rows)
    return out / "labels.csv"
