"""The `glyphs` world: one capital letter per image, in a real font, on a patterned background.

Six aspects, independent and uniform like `shapes`: the letter (character), the typeface class
(typeface: three font families per class, one chosen per image, so a class is a style and not
one font), weight, slant, ink colour (color) and background. Bold and italic come from the
family's own file where it has one and are synthesised otherwise (a stroke for bold, a shear
for italic), so every class has every weight and slant. Nuisance: letter height, position,
rotation, shade and pixel noise. Fonts load only from mdclust/data/fonts (shipped, with their
licences; see its README.md). See docs/datasets.md.
"""

from __future__ import annotations

import math
import string
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np

from mdclust.datasets import common
from mdclust.datasets.common import BACKGROUNDS, COLORS

FONT_DIR = Path(__file__).resolve().parents[1] / "data" / "fonts"

CHARACTERS = tuple(f"letter {c}" for c in string.ascii_uppercase)
TYPEFACES = ("serif", "sans-serif", "monospace", "script", "display")
WEIGHTS = ("regular", "bold")
SLANTS = ("upright", "italic")
VOCABULARY: dict[str, list[str]] = {"character": list(CHARACTERS), "typeface": list(TYPEFACES),
                                    "weight": list(WEIGHTS), "slant": list(SLANTS),
                                    "color": list(COLORS), "background": list(BACKGROUNDS)}
DEFAULT_VALUES = {"character": 6, "typeface": 4, "weight": 2, "slant": 2, "color": 6,
                  "background": 5}
ASPECTS = tuple(VOCABULARY)


@dataclass(frozen=True)
class Family:
    """One font family of a typeface class; ``files`` maps a style ("regular", "bold",
    "italic", "bold-italic") to a file in FONT_DIR, only for the styles the family ships."""

    name: str
    typeface: str
    files: Mapping[str, str]
    package: str
    licence: str


def _four(stem: str, regular: str = "-Regular", bold: str = "-Bold", italic: str = "-Italic",
          bold_italic: str = "-BoldItalic", ext: str = ".ttf") -> dict[str, str]:
    return {"regular": stem + regular + ext, "bold": stem + bold + ext,
            "italic": stem + italic + ext, "bold-italic": stem + bold_italic + ext}


FAMILIES: tuple[Family, ...] = (
    Family("Liberation Serif", "serif", _four("LiberationSerif"),
           "fonts-liberation 1:1.07.4-11", "LICENSE-liberation.txt"),
    Family("Caladea", "serif", _four("Caladea"),
           "fonts-crosextra-caladea 20200211-1", "LICENSE-crosextra-caladea.txt"),
    Family("Baskervald ADF Std", "serif", _four("BaskervaldADFStd", regular="", ext=".otf"),
           "fonts-adf-baskervald 0.20190904-2", "LICENSE-adf-baskervald.txt"),
    Family("Liberation Sans", "sans-serif", _four("LiberationSans"),
           "fonts-liberation 1:1.07.4-11", "LICENSE-liberation.txt"),
    Family("Cabin", "sans-serif", _four("Cabin", ext=".otf"),
           "fonts-cabin 1.5-3", "LICENSE-cabin.txt"),
    Family("Gillius ADF", "sans-serif", _four("GilliusADF", ext=".otf"),
           "fonts-adf-gillius 0.20190904-2", "LICENSE-adf-gillius.txt"),
    Family("Liberation Mono", "monospace", _four("LiberationMono"),
           "fonts-liberation 1:1.07.4-11", "LICENSE-liberation.txt"),
    Family("Courier Prime", "monospace", _four("CourierPrime", regular="", ext=".otf"),
           "fonts-courier-prime 0+git20190115-3", "LICENSE-courier-prime.txt"),
    Family("Go Mono", "monospace", _four("Go-Mono", regular="", bold_italic="-Bold-Italic"),
           "fonts-go 0~20170330-1", "LICENSE-go.txt"),
    Family("Dancing Script", "script", {"regular": "DancingScript-Regular.otf",
                                        "bold": "DancingScript-Bold.otf"},
           "fonts-dancingscript 1.2-2", "LICENSE-dancingscript.txt"),
    Family("Kaushan Script", "script", {"regular": "KaushanScript-Regular.otf"},
           "fonts-kaushanscript 1.02-2.1", "LICENSE-kaushanscript.txt"),
    Family("Lobster", "script", {"regular": "Lobster.otf"},
           "fonts-lobster 2.0-2.1", "LICENSE-lobster.txt"),
    Family("Bebas Neue", "display", {"regular": "BebasNeue-Regular.otf",
                                     "bold": "BebasNeue-Bold.otf"},
           "fonts-bebas-neue 3.0-2", "LICENSE-bebas-neue.txt"),
    Family("Cabin Sketch", "display", {"regular": "CabinSketch-Regular.ttf",
                                       "bold": "CabinSketch-Bold.ttf"},
           "fonts-cabinsketch 1.02-3", "LICENSE-cabinsketch.txt"),
    Family("Blankenburg", "display", {"regular": "Blankenburg_UNZ1A.ttf"},
           "fonts-blankenburg 0.1-3", "LICENSE-blankenburg.txt"),
)

SCALE = 4  # drawn at 4x and downsampled, so strokes stay clean at 64 px
BOLD_STROKE = 0.03  # synthetic bold: stroke width per pixel of letter height
SHEAR = (0.2, 0.25)  # synthetic italic: horizontal shear per unit height (about 11-14 degrees)
HEIGHT = (0.55, 0.75)  # letter ink height, share of the side
TILT = 8.0  # degrees either way
REF_PX = 200  # font size at which each letter's ink height is measured once


@dataclass(frozen=True)
class Sample:
    character: str
    typeface: str
    weight: str = "regular"
    slant: str = "upright"
    color: str = "black"
    background: str = "plain"

    def labels(self) -> dict[str, str]:
        return {a: getattr(self, a) for a in ASPECTS}


def parse_values(spec: str | Mapping[str, int | str] | None) -> dict[str, int]:
    """``"character=10,typeface=all"`` (or a dict) -> values per aspect, defaults for the rest."""
    return common.parse_values(spec, VOCABULARY, DEFAULT_VALUES)


def present_values(seed: int, values: Mapping[str, int]) -> dict[str, list[str]]:
    """The values a set of this seed uses, per aspect, in vocabulary order."""
    return common.present_values(seed, values, VOCABULARY)


def font_style(family: Family, weight: str, slant: str) -> tuple[str, bool, bool]:
    """(file, synthesise bold, synthesise italic) for a weight and slant of a family: its own
    file where it ships one, else the nearest it has plus the missing effect."""
    bold, italic = weight == "bold", slant == "italic"
    want = {(False, False): "regular", (True, False): "bold", (False, True): "italic",
            (True, True): "bold-italic"}
    for b, i in ((bold, italic), (bold, False), (False, italic), (False, False)):
        if want[b, i] in family.files:
            return family.files[want[b, i]], bold and not b, italic and not i
    raise ValueError(f"{family.name} has no regular file")


@lru_cache(maxsize=2048)
def _font(file: str, px: int):
    """A loaded font (FreeType face) per file and pixel size: loading costs more than drawing."""
    from PIL import ImageFont

    return ImageFont.truetype(str(FONT_DIR / file), px)


def _glyph(letter: str, file: str, px: int, stroke: int):
    """The letter's ink as a tightly cropped L image (255 = ink)."""
    from PIL import Image, ImageDraw

    font = _font(file, px)
    left, top, right, bottom = font.getbbox(letter, stroke_width=stroke)
    mask = Image.new("L", (right - left + 2, bottom - top + 2))
    ImageDraw.Draw(mask).text((1 - left, 1 - top), letter, font=font, fill=255,
                              stroke_width=stroke, stroke_fill=255)
    return mask.crop(mask.getbbox())


@lru_cache(maxsize=4096)
def _ink_ratio(letter: str, file: str) -> float:
    """Ink height per pixel of font size, so a letter's height can be chosen directly."""
    return _glyph(letter, file, REF_PX, 0).height / REF_PX


def _placement(w: float, h: float, matrix: np.ndarray, big: int,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shrink the transform if the turned letter would not fit, then pick a centre that keeps
    it inside with a margin. Returns the matrix, the centre and the half extent."""
    corners = np.array([[-w, -h], [w, -h], [w, h], [-w, h]]) / 2 @ matrix.T
    half = np.abs(corners).max(axis=0)
    margin = 0.04 * big
    shrink = min(1.0, float(((big / 2 - margin) / half).min()))
    matrix, half = matrix * shrink, half * shrink
    room = np.maximum(big / 2 - margin - half, 0)
    return matrix, big / 2 + rng.uniform(-1, 1, 2) * room, half


def _ink(sample: Sample, size: int, rng: np.random.Generator) -> np.ndarray:
    """The letter's coverage (0-1) at ``size`` pixels: drawn, sheared and turned at 4x, then
    downsampled. Only the letter's own box is transformed, which keeps this fast."""
    from PIL import Image

    big = size * SCALE
    families = [f for f in FAMILIES if f.typeface == sample.typeface]
    family = families[int(rng.integers(len(families)))]
    file, bold, italic = font_style(family, sample.weight, sample.slant)
    letter = sample.character.removeprefix("letter ")
    height = rng.uniform(*HEIGHT) * big
    # Synthetic bold follows the letter's height, not the font size: script faces draw small
    # letters on a large em, and a stroke sized by the em would fill their counters.
    stroke = max(1, round(BOLD_STROKE * height)) if bold else 0
    # Sizes are rounded to a step so the font cache stays small (the height error is ~2 %).
    step = max(1, big // 32)
    px = max(step, step * round((height - 2 * stroke) / _ink_ratio(letter, file) / step))
    glyph = _glyph(letter, file, px, stroke)
    shear = rng.uniform(*SHEAR) if italic else 0.0
    tilt = math.radians(rng.uniform(-TILT, TILT))
    c, s = math.cos(tilt), math.sin(tilt)
    # forward map, glyph centre -> image: rotate after shearing (tops lean right, as italics do)
    matrix = np.array([[c, -s], [s, c]]) @ np.array([[1.0, -shear], [0.0, 1.0]])
    matrix, centre, half = _placement(glyph.width, glyph.height, matrix, big, rng)
    # the output box, on the 4x grid so that it downsamples onto whole pixels
    lo = np.clip(np.floor((centre - half) / SCALE).astype(int) - 2, 0, size)
    hi = np.clip(np.ceil((centre + half) / SCALE).astype(int) + 2, 0, size)
    inv = np.linalg.inv(matrix)
    offset = np.array([glyph.width / 2, glyph.height / 2]) - inv @ (centre - lo * SCALE)
    data = (inv[0, 0], inv[0, 1], offset[0], inv[1, 0], inv[1, 1], offset[1])
    box = tuple(((hi - lo) * SCALE).tolist())
    part = glyph.transform(box, Image.AFFINE, data, resample=Image.BICUBIC)
    part = part.resize(tuple((hi - lo).tolist()), Image.LANCZOS)
    ink = np.zeros((size, size), np.float32)
    ink[lo[1]:hi[1], lo[0]:hi[0]] = np.asarray(part, dtype=np.float32) / 255
    return ink


def render(sample: Sample, rng: np.random.Generator, size: int = 64):
    """One RGB PIL image of ``size`` pixels: the background painted at 2x as in `shapes`, the
    letter at 4x, each downsampled, then blended by the letter's coverage."""
    from PIL import Image, ImageDraw

    bg = Image.new("RGB", (2 * size, 2 * size))
    common.paint_background(ImageDraw.Draw(bg), sample.background, 2 * size, rng)
    arr = np.asarray(bg.resize((size, size), Image.LANCZOS), dtype=np.float32)
    ink = _ink(sample, size, rng)[..., None]
    shade = rng.uniform(0.85, 1.1)
    rgb = np.clip(np.array(COLORS[sample.color]) * shade + rng.integers(-12, 13, 3), 0, 255)
    arr = arr * (1 - ink) + rgb * ink + rng.normal(0, 6, (size, size, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def samples(n: int, seed: int = 0, present: Mapping[str, list[str]] | None = None
            ) -> Iterator[tuple[Sample, np.random.Generator]]:
    """n independent draws (each aspect uniform over its present values, aspects independent),
    each with its own render rng. ``present=None`` draws from the full vocabulary.

    As in `shapes`, labels come from one stream and each image's nuisance (font family of the
    class, size, position, tilt, shade, noise) from a stream of its own.
    """
    return common.draw_labels(Sample, VOCABULARY, n, seed, present)


def generate_glyphs(out_dir: str | Path, n: int = 3000, seed: int = 0, size: int = 64,
                    values: str | Mapping[str, int | str] | None = None) -> Path:
    """Write n PNGs, labels.csv (path + one column per aspect) and vocabulary.json under
    ``out_dir``. ``values`` says how many values of each aspect the set uses
    (``"character=10,typeface=all"``; defaults in DEFAULT_VALUES), drawn at random from the
    vocabulary by ``seed``."""
    return common.write_set(out_dir, n, seed, size, values, vocabulary=VOCABULARY,
                            defaults=DEFAULT_VALUES, samples=samples, render=render)
