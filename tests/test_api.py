"""The Python API: `import mdclust` exposes the stages, each taking a Store or a path."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY, write_images


def test_import_is_light_and_exposes_the_stages():
    code = ("import sys, mdclust.stages.embed, mdclust.stages.train, mdclust; "
            "assert 'torch' not in sys.modules and callable(mdclust.train); "
            "print(sorted(mdclust.__all__)); mdclust.Store")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    stages = ["embed", "candidates", "filter_nouns", "train", "cluster", "load_clustering",
              "evaluate", "export_csv", "export", "export_folders", "info", "models", "report"]
    results = ["EmbedResult", "CandidateResult", "FilterResult", "TrainResult",
               "ClusterResult", "EvalResult", "ExportResult", "FoldersResult", "InfoResult",
               "ReportResult"]
    errors = ["MdclustError", "BadInput", "MissingStage", "StaleResult", "QualityGateFailed"]
    assert eval(out[0]) == sorted(["__version__", "Store", "METRICS", "shared_features"]
                                  + stages + results + errors)


@pytest.mark.parametrize("as_path", [True, False], ids=["path", "Store"])
def test_every_stage_takes_a_path_or_a_store(tmp_path, as_path):
    import mdclust
    import mdclust.methods  # noqa: F401  (public: the registry)

    write_images(tmp_path / "imgs", 12, size=(24, 24))
    path = str(tmp_path / "s.h5") if as_path else mdclust.Store(tmp_path / "s.h5")
    labels = tmp_path / "labels.csv"
    labels.write_text("path,color\n" + "".join(
        f"{'sub/' if i % 2 else ''}img{i:04d}.png,{'ab'[i % 3 % 2]}\n" for i in range(12)))
    results = [mdclust.embed(tmp_path / "imgs", path, model=TINY, pretrained="random",
                             workers=0)]
    words = tmp_path / "w.txt"
    words.write_text("red\ngreen\nblue\nyellow\n")
    results.append(mdclust.candidates(path, "color", from_file=words, k=2))
    results.append(mdclust.filter_nouns(path, "color", k=2))
    res = mdclust.cluster(path, "color", method="gradnorm", k=2)
    results.append(res)
    results.append(mdclust.train(path, None, method="pipcdr", k=2, stop_after=1,
                                 config=mdclust.methods.get("pipcdr").settings(
                                     k=2, epochs=2, views="none")))
    results.append(mdclust.evaluate(path, "color", method="gradnorm", labels=labels, runs=2))
    results.append(mdclust.info(path))
    for r in results:  # dataclasses whose to_json is plain JSON
        assert json.loads(json.dumps(r.to_json())) == r.to_json()
    assert [type(r).__name__ for r in results] == [
        "EmbedResult", "CandidateResult", "FilterResult", "ClusterResult", "TrainResult",
        "EvalResult", "InfoResult"]
    # the result carries the labels with their paths, equal to what the store holds
    stored = mdclust.load_clustering(path, "color", method="gradnorm")
    assert stored.paths == res.paths and len(res.paths) == 12
    assert np.array_equal(stored.labels, res.labels) and stored.sizes == res.sizes
    assert sorted(np.bincount(res.labels).tolist()) == sorted(res.sizes)
    ev = results[5]
    assert len(ev.per_run["nmi"]) == 2 and ev.nmi == pytest.approx(np.mean(ev.per_run["nmi"]),
                                                                      abs=1e-6)
    assert results[6].images == 12 and results[4].finished is False


def test_errors_are_typed_with_the_cli_messages(tmp_path):
    import mdclust

    write_images(tmp_path / "imgs", 6, size=(24, 24))
    path = tmp_path / "s.h5"
    mdclust.embed(tmp_path / "imgs", path, model=TINY, pretrained="random", workers=0)
    with pytest.raises(mdclust.BadInput, match="unknown method 'nope': use kmeans"):
        mdclust.cluster(path, method="nope", k=2)
    with pytest.raises(mdclust.BadInput, match="--k 9 is more than the number of images"):
        mdclust.cluster(path, method="kmeans", k=9)
    with pytest.raises(mdclust.MissingStage, match="run `mdclust candidates --interest color"):
        mdclust.cluster(path, "color", method="zeroshot", k=2)
    with pytest.raises(mdclust.BadInput, match="config for pipcdr must be a PipcdrConfig, not "
                                               "MultiDProxyConfig"):
        mdclust.train(path, None, method="pipcdr",
                      config=mdclust.methods.get("multidproxy").settings(k=2))
    with pytest.raises(mdclust.BadInput, match="unknown training method 'kmeans'"):
        mdclust.train(path, "color", method="kmeans")
    with pytest.raises(mdclust.MissingStage, match="no kmeans clustering"):
        mdclust.evaluate(path, method="kmeans")
    # the CLI prints the same message as one line
    done = subprocess.run([sys.executable, "-m", "mdclust", "cluster", "--method", "nope",
                           "--k", "2", "--store", str(path)], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "mdclust: error: unknown method 'nope': use kmeans, zeroshot, gradnorm, tac, sic, "
        "multidproxy, pipcdr"]


@pytest.mark.slow
def test_example_script_runs(tmp_path):
    """examples/python_api.py, the demo's pipeline through the public API, as a user runs it."""
    script = Path(__file__).parents[1] / "examples" / "python_api.py"
    done = subprocess.run([sys.executable, str(script), "--workdir", str(tmp_path), "--n", "120"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    table = json.loads(done.stdout)
    assert set(table) == {"kmeans", "gradnorm"}
    # on colour, the language-assisted method beats interest-free k-means by a margin
    assert table["gradnorm"]["color"] > table["kmeans"]["color"] + 0.2
    assert all(0 <= v <= 1 for row in table.values() for v in row.values())


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
    assert mdclust.info(path).images == 12
    assert mdclust.export_csv(path, "color", method="gradnorm").count("\n") == 13
    assert isinstance(mdclust.Store(path), mdclust.Store)
    with pytest.raises(mdclust.MdclustError, match="store must be a Store or a path"):
        mdclust.cluster(42, "color")
