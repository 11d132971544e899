"""Synthetic multi-aspect image sets: the same images, several independent ways to group them.

Two generated worlds share one interface (VOCABULARY, ASPECTS, DEFAULT_VALUES, Sample,
``samples``, ``render`` and a ``generate_*`` function): `shapes` (coloured objects on patterned
backgrounds) and `glyphs` (one capital letter in a real font). The names at this level are the
`shapes` world's, as they were before `glyphs` existed, so ``from mdclust.datasets import
VOCABULARY`` keeps meaning shapes. See docs/datasets.md.
"""

from mdclust.datasets import glyphs, shapes
from mdclust.datasets.common import BACKGROUNDS, COLORS, read_vocabulary
from mdclust.datasets.glyphs import generate_glyphs
from mdclust.datasets.shapes import (
    ASPECTS,
    COUNTS,
    DEFAULT_VALUES,
    SHAPES,
    TEXTURES,
    VOCABULARY,
    Sample,
    generate_shapes,
    parse_values,
    present_values,
    render,
    samples,
)

WORLDS = {"shapes": shapes, "glyphs": glyphs}

__all__ = ["ASPECTS", "BACKGROUNDS", "COLORS", "COUNTS", "DEFAULT_VALUES", "SHAPES", "TEXTURES",
           "VOCABULARY", "WORLDS", "Sample", "generate_glyphs", "generate_shapes", "glyphs",
           "parse_values", "present_values", "read_vocabulary", "render", "samples", "shapes"]
