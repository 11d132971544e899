"""What English mdclust-tiny v3 is taught and how its knowledge is measured.

- `distil_words()`: WordNet 3.0's noun and adjective lemmas of at most two words (the bundled
  wordnet.zip), the vocabulary the text tower is distilled on, plus both worlds' values.
- `kind_words()`: WordNet colour names (hyponyms of chromatic_color), plane-figure names (shape)
  and font words (typeface), minus every word a training caption uses: the words the
  language criterion of docs/models.md is measured on.
- `kind_accuracy()`: the share of those words whose nearest value, over every aspect of both
  worlds, belongs to the right kind.
"""

from __future__ import annotations

import re
import sys
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mdclust.datasets import WORLDS  # noqa: E402

WORDNET = ROOT / "mdclust/data/nltk_data/corpora/wordnet.zip"
KINDS = {"color": ("chromatic_color.n.01",), "shape": ("plane_figure.n.01",),
         "typeface": ("font.n.01",)}
# A font word is placed right when it lands on any typographic aspect: "italic" and "boldface"
# are slant and weight words, which the glyphs world keeps apart from typeface class.
KIND_ASPECTS = {"color": ("color",), "shape": ("shape",),
                "typeface": ("typeface", "weight", "slant")}


def all_values() -> list[tuple[str, str, str]]:
    """(world, aspect, value) for every value of every world, colour and background once."""
    out, seen = [], set()
    for world, mod in WORLDS.items():
        for aspect, values in mod.VOCABULARY.items():
            for v in values:
                if (aspect, v) not in seen:
                    seen.add((aspect, v))
                    out.append((world, aspect, v))
    return out


def distil_words() -> list[str]:
    words: dict[str, None] = {}
    with zipfile.ZipFile(WORDNET) as z:
        for pos in ("noun", "adj"):
            for line in z.read(f"wordnet/index.{pos}").decode().splitlines():
                lemma = line.split(" ", 1)[0]
                if line and not line.startswith(" ") and lemma.count("_") <= 1 \
                        and re.fullmatch(r"[a-z][a-z_\-]*", lemma):
                    words[lemma.replace("_", " ")] = None
    for _, _, v in all_values():
        words[v.lower()] = None
    return list(words)


def hyponym_names(root: str, instances: bool = True, with_root: bool = True) -> list[str]:
    """Lemma names of at most two words under a WordNet synset, in walk order (repeats kept)."""
    from mdclust.stages.candidates.wordnet import clean, wordnet

    syn = wordnet().synset(root)
    below = syn.closure(lambda x: x.hyponyms() + (x.instance_hyponyms() if instances else []))
    names = (clean(lemma.name()) for s in ([syn] if with_root else []) + list(below)
             for lemma in s.lemmas())
    return [n for n in names if len(n.split()) <= 2]


def kind_words(caption_words: set[str]) -> dict[str, list[str]]:
    out = {}
    for kind, roots in KINDS.items():
        found = {name: None for root in roots for name in hyponym_names(root)
                 if not set(re.findall(r"[a-z]+", name)) & caption_words}
        out[kind] = sorted(found)
    return out


def kind_accuracy(encode, words: dict[str, list[str]], template: str = "a photo of a {}.",
                  ) -> dict[str, dict]:
    """``encode(texts) -> unit vectors``; per kind: share right, count, and the misses."""
    values = all_values()
    v = encode([template.format(x) for _, _, x in values])
    aspects = np.array([a for _, a, _ in values])
    out = {}
    for kind, ws in words.items():
        t = encode([template.format(w) for w in ws])
        nearest = aspects[(t @ v.T).argmax(1)]
        right = np.isin(nearest, KIND_ASPECTS[kind])
        out[kind] = {"right": round(float(right.mean()), 3), "words": len(ws),
                     "misses": {w: str(a) for w, a, r in zip(ws, nearest, right) if not r}}
    return out
