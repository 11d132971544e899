import csv
import hashlib
import json
from collections import Counter

import numpy as np
import pytest
from typer.testing import CliRunner

from mdclust.cli import app
from mdclust.core.errors import MdclustError
from mdclust.datasets import (
    ASPECTS,
    DEFAULT_VALUES,
    VOCABULARY,
    Sample,
    generate_shapes,
    parse_values,
    present_values,
    read_vocabulary,
    render,
    samples,
)


def files_digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    generate_shapes(tmp_path / "a", n=20, seed=3)
    generate_shapes(tmp_path / "b", n=20, seed=3)
    generate_shapes(tmp_path / "c", n=20, seed=4)
    assert files_digest(tmp_path / "a") == files_digest(tmp_path / "b")
    assert files_digest(tmp_path / "a")["labels.csv"] != files_digest(tmp_path / "c")["labels.csv"]
    assert read_vocabulary(tmp_path / "a") != read_vocabulary(tmp_path / "c")


def test_vocabulary_is_open_with_close_pairs():
    assert len(VOCABULARY["color"]) >= 16 and len(VOCABULARY["shape"]) >= 12
    assert len(VOCABULARY["background"]) >= 10 and len(ASPECTS) >= 5
    for a, b in (("blue", "navy"), ("red", "maroon"), ("green", "teal")):
        assert a in VOCABULARY["color"] and b in VOCABULARY["color"]
    words = [w for v in VOCABULARY.values() for w in v]
    assert len(words) == len(set(words)), "a word names one value of one aspect only"
    for aspect, k in DEFAULT_VALUES.items():
        assert 4 <= k <= 8 and k <= len(VOCABULARY[aspect])


def test_a_set_uses_a_random_subset_and_records_it(tmp_path):
    generate_shapes(tmp_path / "s", n=60, seed=11, values="color=3,shape=all")
    vocab = json.loads((tmp_path / "s" / "vocabulary.json").read_text())
    assert list(vocab) == list(ASPECTS)
    assert len(vocab["color"]["present"]) == 3
    assert vocab["shape"]["present"] == VOCABULARY["shape"]
    assert len(vocab["background"]["present"]) == DEFAULT_VALUES["background"]
    for aspect in ASPECTS:
        assert vocab[aspect]["vocabulary"] == VOCABULARY[aspect]
        assert set(vocab[aspect]["present"]) <= set(VOCABULARY[aspect])
    with open(tmp_path / "s" / "labels.csv") as fh:
        rows = list(csv.DictReader(fh))
    for aspect in ASPECTS:
        assert {r[aspect] for r in rows} <= set(vocab[aspect]["present"])
    assert {r["color"] for r in rows} == set(vocab["color"]["present"])
    # different seeds draw different subsets
    subsets = {tuple(present_values(s, DEFAULT_VALUES)["color"]) for s in range(10)}
    assert len(subsets) >= 8


def test_labels_cover_every_present_value_and_aspects_are_independent():
    present = present_values(5, DEFAULT_VALUES)
    labels = [s.labels() for s, _ in samples(3000, seed=5, present=present)]
    for aspect, values in present.items():
        counts = Counter(lab[aspect] for lab in labels)
        assert set(counts) == set(values)
        assert min(counts.values()) > 0.6 * 3000 / len(values)
    pairs = Counter((lab["color"], lab["shape"]) for lab in labels)
    expected = 3000 / (len(present["color"]) * len(present["shape"]))
    assert len(pairs) == len(present["color"]) * len(present["shape"])
    assert min(pairs.values()) > 0.4 * expected
    # present=None draws from the whole vocabulary (how the tiny CLIP is trained)
    full = Counter(s.color for s, _ in samples(2000, seed=0))
    assert set(full) == set(VOCABULARY["color"])


def test_parse_values():
    assert parse_values(None) == DEFAULT_VALUES
    assert parse_values("color=all, shape=2")["color"] == len(VOCABULARY["color"])
    assert parse_values({"shape": 2})["shape"] == 2
    for bad, msg in (("color=0", "between 1 and 16"), ("colr=3", "unknown aspect"),
                     ("color", "aspect=number"), ("color=x", "not a number")):
        with pytest.raises(MdclustError, match=msg):
            parse_values(bad)


def test_aspects_show_in_the_pixels():
    rng = lambda: np.random.default_rng(0)  # noqa: E731 - same nuisance for each picture
    base = Sample("red", "square", "plain", "one", "solid")
    img = lambda **kw: np.asarray(render(Sample(**{**base.__dict__, **kw}), rng())).astype(int)  # noqa: E731
    ref = img()
    for change in ({"color": "maroon"}, {"count": "three"}, {"texture": "hollow"},
                   {"background": "grid"}, {"shape": "heart"}):
        assert np.abs(img(**change) - ref).mean() > 2, change
    # four objects cover more of the picture with the object colour than one of the same size
    red = lambda a: ((a[..., 0] > 150) & (a[..., 1] < 90)).sum()  # noqa: E731
    assert red(img(count="four")) > red(img(count="one", texture="hollow"))


def test_nuisance_varies_within_a_label():
    present = {a: VOCABULARY[a] for a in ASPECTS}
    draws = [(s, rng) for s, rng in samples(3000, seed=2, present=present)]
    same = [np.asarray(render(s, rng)).astype(int) for s, rng in draws
            if (s.color, s.shape) == ("red", "star")][:2]
    assert len(same) == 2
    assert np.abs(same[0] - same[1]).mean() > 10  # position/size/rotation/background differ


def test_cli_writes_images_labels_and_vocabulary(tmp_path):
    r = CliRunner().invoke(app, ["datasets", "shapes", str(tmp_path / "d"), "--n", "12",
                                 "--seed", "5", "--values", "count=2", "--json"])
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    vocab = read_vocabulary(tmp_path / "d")
    assert out["aspects"] == {a: v["present"] for a, v in vocab.items()}
    assert len(out["aspects"]["count"]) == 2
    with open(tmp_path / "d" / "labels.csv") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["path", *ASPECTS]
    assert len(rows) == 13 and all((tmp_path / "d" / r[0]).is_file() for r in rows[1:])
    r = CliRunner().invoke(app, ["datasets", "shapes", str(tmp_path / "e"), "--n", "0"])
    assert r.exit_code == 2 and "--n must be at least 1" in r.stderr
    r = CliRunner().invoke(app, ["datasets", "shapes", str(tmp_path / "e"), "--values",
                                 "color=99"])
    assert r.exit_code == 2 and "between 1 and 16" in r.stderr
    r = CliRunner().invoke(app, ["datasets", "shapes", str(tmp_path / "d" / "labels.csv")])
    assert r.exit_code == 2 and "not a folder" in r.stderr
