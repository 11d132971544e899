import csv
import hashlib
import json
import re

import numpy as np
from typer.testing import CliRunner

from mdclust import datasets
from mdclust.cli import app
from mdclust.datasets import glyphs
from mdclust.datasets.glyphs import (
    ASPECTS,
    DEFAULT_VALUES,
    FAMILIES,
    FONT_DIR,
    SLANTS,
    TYPEFACES,
    VOCABULARY,
    WEIGHTS,
    Sample,
    generate_glyphs,
    present_values,
    render,
    samples,
)


def files_digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def pixels(sample, seed=0, size=64):
    return np.asarray(render(sample, np.random.default_rng(seed), size)).astype(float)


def test_worlds_share_one_interface_and_the_old_names_stay_shapes():
    assert datasets.WORLDS == {"shapes": datasets.shapes, "glyphs": glyphs}
    for world in datasets.WORLDS.values():
        for name in ("VOCABULARY", "ASPECTS", "DEFAULT_VALUES", "Sample", "samples", "render"):
            assert hasattr(world, name), name
    assert datasets.VOCABULARY is datasets.shapes.VOCABULARY
    assert VOCABULARY["character"][0] == "letter A" and len(VOCABULARY["character"]) == 26
    assert VOCABULARY["typeface"] == ["serif", "sans-serif", "monospace", "script", "display"]
    assert VOCABULARY["color"] == datasets.shapes.VOCABULARY["color"]
    assert VOCABULARY["background"] == datasets.shapes.VOCABULARY["background"]
    assert DEFAULT_VALUES == {"character": 6, "typeface": 4, "weight": 2, "slant": 2,
                              "color": 6, "background": 5}


def test_same_seed_same_files_and_the_format_of_shapes(tmp_path):
    generate_glyphs(tmp_path / "a", n=12, seed=3)
    generate_glyphs(tmp_path / "b", n=12, seed=3)
    generate_glyphs(tmp_path / "c", n=12, seed=4)
    assert files_digest(tmp_path / "a") == files_digest(tmp_path / "b")
    assert files_digest(tmp_path / "a")["labels.csv"] != files_digest(tmp_path / "c")["labels.csv"]
    with open(tmp_path / "a" / "labels.csv") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["path", *ASPECTS]
    assert [r[0] for r in rows[1:]] == [f"{i:02d}.png" for i in range(12)]
    labels = [s.labels() for s, _ in samples(12, 3, present_values(3, DEFAULT_VALUES))]
    assert [dict(zip(ASPECTS, r[1:])) for r in rows[1:]] == labels
    vocab = json.loads((tmp_path / "a" / "vocabulary.json").read_text())
    assert list(vocab) == list(ASPECTS)
    for aspect in ASPECTS:
        assert vocab[aspect]["vocabulary"] == VOCABULARY[aspect]
        assert len(vocab[aspect]["present"]) == DEFAULT_VALUES[aspect]
        assert {lab[aspect] for lab in labels} <= set(vocab[aspect]["present"])
    assert datasets.read_vocabulary(tmp_path / "a") == vocab


def test_present_values_are_respected():
    present = present_values(9, glyphs.parse_values("character=3,typeface=all,weight=1"))
    assert len(present["character"]) == 3 and present["typeface"] == list(TYPEFACES)
    assert len(present["weight"]) == 1
    labels = [s.labels() for s, _ in samples(400, seed=9, present=present)]
    for aspect in ASPECTS:
        assert {lab[aspect] for lab in labels} == set(present[aspect]), aspect


def test_every_class_weight_and_slant_renders_every_family():
    for family in FAMILIES:
        for weight in WEIGHTS:
            for slant in SLANTS:
                file, _, _ = glyphs.font_style(family, weight, slant)
                assert (FONT_DIR / file).is_file(), file
    for t in TYPEFACES:
        for w in WEIGHTS:
            for s in SLANTS:
                img = render(Sample("letter R", t, w, s, "black"), np.random.default_rng(1))
                assert img.size == (64, 64) and img.mode == "RGB"
                assert (np.asarray(img).min(axis=2) < 90).mean() > 0.03, (t, w, s)


def ink_mask(sample, seed, family):
    """The letter's coverage for one chosen family (the rng otherwise picks one)."""
    keep = glyphs.FAMILIES
    try:
        glyphs.FAMILIES = (family,)
        return glyphs._ink(sample, 64, np.random.default_rng(seed))
    finally:
        glyphs.FAMILIES = keep


def test_the_five_classes_look_different():
    # the same letter, height, place and tilt (one seed) in every family: two families of
    # different classes differ clearly more than two families of one class (measured: 0.89
    # against 0.67 of the ink, averaged over six letters)
    def diff(a, b):
        return np.abs(a - b).sum() / max(a.sum(), b.sum())

    within, between = [], []
    for letter in ("G", "R", "M", "A", "E", "K"):
        m = [ink_mask(Sample(f"letter {letter}", f.typeface), 5, f) for f in FAMILIES]
        for i, a in enumerate(FAMILIES):
            for j in range(i + 1, len(FAMILIES)):
                same = a.typeface == FAMILIES[j].typeface
                (within if same else between).append(diff(m[i], m[j]))
    assert np.mean(between) > 1.2 * np.mean(within), (np.mean(between), np.mean(within))
    # and the rendered picture is a function of the sample and its rng alone
    a, b = pixels(Sample("letter G", "serif"), 1), pixels(Sample("letter G", "serif"), 1)
    assert np.array_equal(a, b)
    assert np.abs(a - pixels(Sample("letter G", "script"), 1)).mean() > 2


def test_bold_has_more_ink_and_italic_leans():
    for family in FAMILIES:
        t = family.typeface
        regular = ink_mask(Sample("letter H", t, "regular"), 2, family).sum()
        bold = ink_mask(Sample("letter H", t, "bold"), 2, family).sum()
        assert bold > 1.15 * regular, (family.name, bold / regular)
    # italic: the top of an I sits right of its bottom (tilt is part of the nuisance, so the
    # lean is compared over seeds)
    lean = {}
    for slant in SLANTS:
        shifts = []
        for seed in range(12):
            m = ink_mask(Sample("letter I", "sans-serif", "regular", slant), seed, FAMILIES[3])
            rows = np.nonzero(m.sum(axis=1) > 0.5)[0]
            cols = np.arange(64)

            def centre(r):
                return (m[r] * cols).sum() / m[r].sum()

            shifts.append(centre(rows[1]) - centre(rows[-2]))
        lean[slant] = np.mean(shifts)
    assert lean["italic"] > lean["upright"] + 4, lean


RESERVED = re.compile(r"urw|gsfont|nimbus|texgyre|tex-gyre|lmodern|latinmodern|lmroman|cm-?super"
                      r"|^cmu|math|\btex\b|^[a-z]\d{6}l\.", re.I)


def test_fonts_are_shipped_with_licences_and_none_is_reserved():
    fonts = sorted(p.name for p in FONT_DIR.iterdir() if p.suffix.lower() in (".ttf", ".otf"))
    assert fonts and not [f for f in fonts if RESERVED.search(f)]
    used = {file for f in FAMILIES for file in f.files.values()}
    assert set(fonts) == used  # nothing shipped unused, nothing used that is not shipped
    readme = (FONT_DIR / "README.md").read_text()
    for family in FAMILIES:
        assert not RESERVED.search(family.package) and not RESERVED.search(family.name)
        licence = (FONT_DIR / family.licence).read_text()
        assert "License" in licence or "LICENSE" in licence, family.licence
        if "GNU General Public License" in licence:
            assert (FONT_DIR / "GPL-2.txt").is_file()
        for file in family.files.values():
            assert f"| {file} |" in readme, file
    assert len({f.name for f in FAMILIES if f.typeface == "serif"}) >= 2
    assert all(len([f for f in FAMILIES if f.typeface == t]) >= 3 for t in TYPEFACES)
    assert sum(p.stat().st_size for p in FONT_DIR.iterdir()) <= 5 * 2 ** 20


def test_cli_writes_a_set_and_rejects_bad_values(tmp_path):
    r = CliRunner().invoke(app, ["datasets", "glyphs", str(tmp_path / "d"), "--n", "6",
                                 "--seed", "2", "--values", "typeface=2", "--json"])
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert list(out["aspects"]) == list(ASPECTS) and len(out["aspects"]["typeface"]) == 2
    assert len(list((tmp_path / "d").glob("*.png"))) == 6
    for bad, msg in (("typo=3", "unknown aspect 'typo'"), ("typeface=9", "between 1 and 5")):
        r = CliRunner().invoke(app, ["datasets", "glyphs", str(tmp_path / "e"), "--values", bad])
        assert r.exit_code == 2 and msg in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "e").exists()
