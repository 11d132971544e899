"""Captions for training mdclust-tiny: what a generated image is described as, per world.

About half name one aspect ("a photo of a star.", "a serif font", "something maroon"), the rest
several ("a hollow red star on a dotted background", "a bold italic letter Q in a script
font"); mdclust's own prompt "a photo of a {}." is among the templates of every aspect.
"""

from __future__ import annotations

import random
import re

TEMPLATES = {
    "shapes": {
        "color": ["a photo of a {}.", "a photo of something {}.", "{}", "the color {}",
                  "a {} object", "an object with color of {}", "something {}"],
        "shape": ["a photo of a {}.", "{}", "a {}", "a {} shape", "an object with shape of {}",
                  "a photo of the {}."],
        "background": ["a photo of a {}.", "{}", "a {} background", "on a {} background",
                       "an object with background of {}", "a photo with a {} background"],
        "count": ["a photo of a {}.", "{}", "{} objects", "a photo of {} objects",
                  "an image with count of {}", "{} things"],
        "texture": ["a photo of a {}.", "{}", "a {} object", "a {} shape",
                    "an object with texture of {}", "something {}"],
    },
    "glyphs": {
        "character": ["a photo of a {}.", "{}", "the {}", "a capital {}", "the character {}",
                      "a photo of the {}."],
        "typeface": ["a photo of a {}.", "{}", "a {} font", "a letter in a {} typeface",
                     "{} type", "text set in a {} font"],
        "weight": ["a photo of a {}.", "{}", "a {} letter", "{} type", "a letter of {} weight"],
        "slant": ["a photo of a {}.", "{}", "an {} letter", "{} type", "a letter set {}"],
        "color": ["a photo of a {}.", "{}", "a {} letter", "{} ink", "the color {}",
                  "something {}", "a photo of something {}."],
        "background": ["a photo of a {}.", "{}", "a {} background", "on a {} background",
                       "a letter on a {} background"],
    },
}
FULL = {
    "shapes": ["a {texture} {color} {shape} on a {background} background",
               "a photo of a {color} {shape}.", "a {color} {shape}", "{count} {color} {shape}",
               "a {shape} on a {background} background", "{count} {texture} objects",
               "a {color} object on a {background} background", "a {texture} {shape}",
               "{count} {texture} {color} {shape} on a {background} background"],
    "glyphs": ["a {color} {character} on a {background} background",
               "a {weight} {slant} {character} in a {typeface} font",
               "a {color} {typeface} {character}", "a {weight} {color} {character}",
               "a {slant} {typeface} {character}",
               "a {typeface} {character} on a {background} background",
               "a {weight} {slant} {color} {character} in a {typeface} font on a {background} "
               "background", "a photo of a {color} {character}."],
}


def caption(world: str, labels: dict[str, str], rng: random.Random
            ) -> tuple[str, dict[str, str]]:
    """A caption and the aspects it asserts (used to know which images it is true of)."""
    if rng.random() < 0.55:
        aspect = rng.choice(list(TEMPLATES[world]))
        return (rng.choice(TEMPLATES[world][aspect]).format(labels[aspect]),
                {aspect: labels[aspect]})
    t = rng.choice(FULL[world])
    used = {a: labels[a] for a in labels if "{" + a + "}" in t}
    return t.format(**labels), used


def caption_words() -> set[str]:
    """Every word a training caption can contain."""
    from mdclust.datasets import WORLDS

    words: set[str] = set()
    for world, mod in WORLDS.items():
        for t in [*(t for ts in TEMPLATES[world].values() for t in ts), *FULL[world]]:
            words |= set(re.findall(r"[a-z]+", re.sub(r"\{\w*\}", " ", t.lower())))
        for values in mod.VOCABULARY.values():
            for v in values:
                words |= set(re.findall(r"[a-z]+", v.lower()))
    return words
