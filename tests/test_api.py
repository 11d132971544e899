"""The Python API: `import mdclust` exposes the stages, each taking a Store or a path."""

import subprocess
import sys

import pytest
from conftest import TINY, write_images


def test_import_is_light_and_exposes_the_stages():
    code = ("import sys, mdclust.stages.embed, mdclust.stages.train, mdclust; "
            "assert 'torch' not in sys.modules and callable(mdclust.train); "
            "print(sorted(mdclust.__all__)); mdclust.Store")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert eval(out[0]) == sorted(["__version__", "embed", "candidates", "filter_nouns",
                                   "train", "cluster", "evaluate", "export_csv", "info",
                                   "Store", "MdclustError", "QualityGateFailed"])


def test_every_stage_takes_a_path(tmp_path):
    import mdclust

    write_images(tmp_path / "imgs", 12, size=(24, 24))
    path = str(tmp_path / "s.h5")
    mdclust.embed(tmp_path / "imgs", path, model=TINY, pretrained="random", workers=0)
    words = tmp_path / "w.txt"
    words.write_text("red\ngreen\nblue\nyellow\n")
    mdclust.candidates(path, "color", from_file=words, k=2)
    mdclust.filter_nouns(path, "color", k=2)
    res = mdclust.cluster(path, "color", method="gradnorm", k=2)
    assert sum(res.sizes) == 12
    assert mdclust.info(path)["images"] == 12
    assert mdclust.export_csv(path, "color", method="gradnorm").count("\n") == 13
    assert isinstance(mdclust.Store(path), mdclust.Store)
    with pytest.raises(mdclust.MdclustError, match="store must be a Store or a path"):
        mdclust.cluster(42, "color")
