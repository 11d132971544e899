import csv
import hashlib
import json
from collections import Counter

import numpy as np
from typer.testing import CliRunner

from mdclust.cli import app
from mdclust.datasets import ASPECTS, generate_shapes, render, samples


def files_digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    generate_shapes(tmp_path / "a", n=20, seed=3)
    generate_shapes(tmp_path / "b", n=20, seed=3)
    generate_shapes(tmp_path / "c", n=20, seed=4)
    assert files_digest(tmp_path / "a") == files_digest(tmp_path / "b")
    assert files_digest(tmp_path / "a")["labels.csv"] != files_digest(tmp_path / "c")["labels.csv"]


def test_labels_cover_every_value_and_aspects_are_independent(tmp_path):
    labels = [s.labels() for s, _ in samples(3000, seed=0)]
    for aspect, values in ASPECTS.items():
        assert 3 <= len(values) <= 8
        counts = Counter(lab[aspect] for lab in labels)
        assert set(counts) == set(values)
        assert min(counts.values()) > 0.6 * 3000 / len(values)
    # independence: every (color, shape) pair occurs close to its expected frequency
    pairs = Counter((lab["color"], lab["shape"]) for lab in labels)
    expected = 3000 / (len(ASPECTS["color"]) * len(ASPECTS["shape"]))
    assert len(pairs) == 30 and min(pairs.values()) > 0.5 * expected


def test_nuisance_varies_within_a_label(tmp_path):
    draws = [(s, rng) for s, rng in samples(400, seed=2)]
    same = [np.asarray(render(s, rng)).astype(int) for s, rng in draws
            if (s.color, s.shape) == ("red", "star")][:2]
    assert len(same) == 2
    assert np.abs(same[0] - same[1]).mean() > 10  # position/size/rotation/background differ


def test_cli_writes_images_and_labels(tmp_path):
    r = CliRunner().invoke(app, ["datasets", "shapes", str(tmp_path / "d"), "--n", "12",
                                 "--seed", "5", "--json"])
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["aspects"]["shape"] == ASPECTS["shape"]
    with open(tmp_path / "d" / "labels.csv") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["path", "color", "shape", "background"]
    assert len(rows) == 13 and all((tmp_path / "d" / r[0]).is_file() for r in rows[1:])
    r = CliRunner().invoke(app, ["datasets", "shapes", str(tmp_path / "e"), "--n", "0"])
    assert r.exit_code == 2 and "--n must be at least 1" in r.stderr
