"""The `shapes` world: one to four objects of one colour (color), form (shape) and surface
(texture) on a patterned background (background); the number of objects is the fifth aspect
(count). Each aspect has a vocabulary larger than any one set uses: a set draws a random
subset of values per aspect, so a user's candidate list (the whole vocabulary, plus words the
model never saw) holds absent values, as a real LLM answer does. Nuisance variation —
position, size, rotation, shade, pixel noise and grey distractor marks — makes each aspect a
property of the picture as a whole. See docs/datasets.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np

from mdclust.datasets import common
from mdclust.datasets.common import BACKGROUNDS, COLORS

SHAPES = ("circle", "oval", "square", "rectangle", "diamond", "triangle", "star", "cross",
          "heart", "crescent", "arrow", "semicircle")
COUNTS = ("one", "two", "three", "four")
TEXTURES = ("solid", "hollow", "spotted", "banded", "faded")
VOCABULARY: dict[str, list[str]] = {"color": list(COLORS), "shape": list(SHAPES),
                                    "background": list(BACKGROUNDS), "count": list(COUNTS),
                                    "texture": list(TEXTURES)}
# A set has 4-6 values per aspect by default (count has only four words, so all of them).
DEFAULT_VALUES = {"color": 6, "shape": 6, "background": 5, "count": 4, "texture": 4}
ASPECTS = tuple(VOCABULARY)


@dataclass(frozen=True)
class Sample:
    color: str
    shape: str
    background: str
    count: str = "one"
    texture: str = "solid"

    def labels(self) -> dict[str, str]:
        return {a: getattr(self, a) for a in ASPECTS}


def parse_values(spec: str | Mapping[str, int | str] | None) -> dict[str, int]:
    """``"color=6,shape=all"`` (or a dict) -> values per aspect, defaults for the rest."""
    return common.parse_values(spec, VOCABULARY, DEFAULT_VALUES)


def present_values(seed: int, values: Mapping[str, int]) -> dict[str, list[str]]:
    """The values a set of this seed uses, per aspect, in vocabulary order."""
    return common.present_values(seed, values, VOCABULARY)


def _unit_polygon(shape: str) -> list[tuple[float, float]]:
    """Outline in a unit radius, centred at 0 (shapes that are not polygons are traced)."""
    t = np.linspace(0, 2 * math.pi, 48, endpoint=False)
    if shape == "circle":
        return list(zip(np.cos(t), np.sin(t)))
    if shape == "oval":
        return list(zip(np.cos(t), 0.55 * np.sin(t)))
    if shape == "square":
        return [(-0.75, -0.75), (0.75, -0.75), (0.75, 0.75), (-0.75, 0.75)]
    if shape == "rectangle":
        return [(-1, -0.45), (1, -0.45), (1, 0.45), (-1, 0.45)]
    if shape == "diamond":
        return [(0, -1), (0.55, 0), (0, 1), (-0.55, 0)]
    if shape == "triangle":
        return [(math.cos(a), math.sin(a)) for a in np.arange(3) * 2 * math.pi / 3 - math.pi / 2]
    if shape == "star":
        return [((1.0 if i % 2 == 0 else 0.42) * math.cos(a),
                 (1.0 if i % 2 == 0 else 0.42) * math.sin(a))
                for i, a in enumerate(np.arange(10) * math.pi / 5 - math.pi / 2)]
    if shape == "cross":
        w = 0.34
        return [(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w),
                (-1, w), (-1, -w), (-w, -w)]
    if shape == "heart":
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        return list(zip(x / 17, (y + 2) / 17))
    if shape == "crescent":
        a = np.linspace(-0.5 * math.pi, 0.5 * math.pi, 25)
        outer = list(zip(np.cos(a), np.sin(a)))
        inner = list(zip(0.45 * np.cos(a[::-1]), np.sin(a[::-1])))
        return [(x - 0.25, y) for x, y in outer + inner]
    if shape == "arrow":
        return [(-1, -0.22), (0.2, -0.22), (0.2, -0.6), (1, 0), (0.2, 0.6), (0.2, 0.22),
                (-1, 0.22)]
    if shape == "semicircle":
        a = np.linspace(0, math.pi, 25)
        return [(x, y - 0.4) for x, y in zip(np.cos(a), np.sin(a))]
    raise ValueError(shape)


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in _unit_polygon(shape)]


def _layout(count: int, big: int, rng: np.random.Generator) -> list[tuple[float, float, float]]:
    """(cx, cy, r) per object; several objects sit in distinct quadrants so none overlap."""
    if count == 1:
        r = big * rng.uniform(0.22, 0.32)
        cx, cy = big / 2 + rng.uniform(-1, 1, 2) * (big / 2 - r - 2) * 0.7
        return [(cx, cy, r)]
    r = big * rng.uniform(0.15, 0.19)
    out = []
    for q in rng.choice(4, size=count, replace=False).tolist():
        qx, qy = (q % 2 + 0.5) * big / 2, (q // 2 + 0.5) * big / 2
        jx, jy = rng.uniform(-1, 1, 2) * max(0.0, big / 4 - r - 2)
        out.append((qx + jx, qy + jy, r))
    return out


def _paint(arr: np.ndarray, sample: Sample, objects, rgb: np.ndarray,
           rng: np.random.Generator) -> None:
    """Draw the objects with their texture into ``arr`` (float H×W×3, in place)."""
    from PIL import Image, ImageDraw

    big = arr.shape[0]
    outer, inner = Image.new("L", (big, big)), Image.new("L", (big, big))
    d_out, d_in = ImageDraw.Draw(outer), ImageDraw.Draw(inner)
    for cx, cy, r in objects:
        angle = rng.uniform(0, 2 * math.pi)
        d_out.polygon(_polygon(sample.shape, cx, cy, r, angle), fill=255)
        d_in.polygon(_polygon(sample.shape, cx, cy, 0.55 * r, angle), fill=255)
    mask = np.asarray(outer) > 127
    yy, xx = np.mgrid[0:big, 0:big].astype(np.float32)
    theta = rng.uniform(0, math.pi)
    along = xx * math.cos(theta) + yy * math.sin(theta)
    light = np.array([242.0, 242.0, 242.0])
    colour = np.broadcast_to(rgb, arr.shape).copy()
    r0 = objects[0][2]
    if sample.texture == "hollow":
        mask &= ~(np.asarray(inner) > 127)
    elif sample.texture == "banded":
        bands = (along / (0.45 * r0) + rng.uniform()) % 1.0 < 0.5
        colour[bands] = light
    elif sample.texture == "spotted":
        period = 0.7 * r0
        ox, oy = rng.uniform(0, period, 2)
        dx = (xx + ox) % period - period / 2
        dy = (yy + oy) % period - period / 2
        colour[dx * dx + dy * dy < (0.18 * r0) ** 2] = light
    elif sample.texture == "faded":
        # Each object fades from its full colour to near white across its own width.
        t = np.zeros((big, big), np.float32)
        for cx, cy, r in objects:
            local = (along - (cx * math.cos(theta) + cy * math.sin(theta))) / (2 * r) + 0.5
            t = np.maximum(t, np.clip(local, 0, 1) * ((xx - cx) ** 2 + (yy - cy) ** 2 <= 4 * r * r))
        colour = rgb + (light - rgb) * (0.8 * t)[..., None]
    arr[mask] = colour[mask]


def render(sample: Sample, rng: np.random.Generator, size: int = 64):
    """One RGB PIL image of ``size`` pixels (drawn at 2x, then downsampled)."""
    from PIL import Image, ImageDraw

    big = size * 2
    img = Image.new("RGB", (big, big))
    draw = ImageDraw.Draw(img)
    common.paint_background(draw, sample.background, big, rng)
    for _ in range(int(rng.integers(1, 4))):  # grey distractor marks
        x0, y0 = rng.integers(0, big, 2)
        x1, y1 = np.clip(np.array([x0, y0]) + rng.integers(-big // 4, big // 4, 2), 0, big)
        g = int(rng.integers(60, 200))
        draw.line((int(x0), int(y0), int(x1), int(y1)), fill=(g, g, g),
                  width=int(rng.integers(1, 4)))
    objects = _layout(COUNTS.index(sample.count) + 1, big, rng)
    shade = rng.uniform(0.85, 1.1)
    rgb = np.clip(np.array(COLORS[sample.color]) * shade + rng.integers(-12, 13, 3), 0, 255)
    arr = np.asarray(img, dtype=np.float32).copy()
    _paint(arr, sample, objects, rgb, rng)
    img = Image.fromarray(arr.astype(np.uint8)).resize((size, size), Image.LANCZOS)
    arr = np.asarray(img, dtype=np.float32) + rng.normal(0, 6, (size, size, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def samples(n: int, seed: int = 0, present: Mapping[str, list[str]] | None = None
            ) -> Iterator[tuple[Sample, np.random.Generator]]:
    """n independent draws (each aspect uniform over its present values, aspects independent),
    each with its own render rng. ``present=None`` draws from the full vocabulary.

    The labels come from one stream and each image's nuisance from a stream of its own, so the
    labels of a seed do not depend on how (or whether) the images are drawn.
    """
    return common.draw_labels(Sample, VOCABULARY, n, seed, present)


def generate_shapes(out_dir: str | Path, n: int = 3000, seed: int = 0, size: int = 64,
                    values: str | Mapping[str, int | str] | None = None) -> Path:
    """Write n PNGs, labels.csv (path + one column per aspect) and vocabulary.json under
    ``out_dir``. ``values`` says how many values of each aspect the set uses
    (``"color=6,shape=all"``; defaults in DEFAULT_VALUES), drawn at random from the vocabulary
    by ``seed``."""
    return common.write_set(out_dir, n, seed, size, values, vocabulary=VOCABULARY,
                            defaults=DEFAULT_VALUES, samples=samples, render=render)
