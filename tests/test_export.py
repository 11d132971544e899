"""`mdclust export --format csv|parquet|jsonl [--with-scores]` and `--to-folders` on a real
store of generated images (real files, real Parquet read back with pyarrow, real links)."""

import csv
import io
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import MDCLUST, shapes_store

import mdclust
from mdclust.stages.export import FOLDERS_MARKER, folder_names, safe_name

INTERESTS = Path(__file__).parents[1] / "examples" / "interests" / "shapes"


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    work = tmp_path_factory.mktemp("export")
    store, labels = shapes_store(work, 120, 3)
    mdclust.candidates(store, "color", from_file=INTERESTS / "color.txt", k=4)
    mdclust.cluster(store, "color", method="zeroshot")
    mdclust.cluster(store, method="kmeans", k=3)
    return work, store


def run(store, *args, code=0):
    done = subprocess.run([MDCLUST, *args, "--store", str(store)], capture_output=True,
                          timeout=300)
    assert done.returncode == code, done.stderr.decode()[-2000:]
    return done


def csv_rows(store, *args):
    text = run(store, "export", *args, "--raw").stdout.decode()
    return list(csv.DictReader(io.StringIO(text, newline="")))


def test_parquet_and_jsonl_hold_the_rows_of_the_csv(made, tmp_path):
    import pyarrow.parquet as pq

    _, store = made
    want = csv_rows(store, "--interest", "color", "--method", "zeroshot")
    assert len(want) == 120 and set(want[0]) == {"path", "cluster", "name"}
    out = tmp_path / "c.parquet"
    got = json.loads(run(store, "export", "--interest", "color", "--method", "zeroshot",
                         "--format", "parquet", "--out", str(out), "--json").stdout)
    assert got["n"] == 120 and got["format"] == "parquet"
    table = pq.read_table(out).to_pylist()
    assert [{k: str(v) for k, v in r.items()} for r in table] == want
    lines = run(store, "export", "--interest", "color", "--method", "zeroshot", "--format",
                "jsonl").stdout.decode().splitlines()
    assert [{k: str(v) for k, v in json.loads(x).items()} for x in lines] == want
    assert not list(tmp_path.glob(".*tmp*"))  # nothing left beside the file


def test_scores_are_each_images_similarity_to_its_clusters_name(made, tmp_path):
    import pyarrow.parquet as pq

    from mdclust.core.features import load_image_features
    from mdclust.core.store import Store
    from mdclust.core.textcache import DEFAULT_TEMPLATE, text_features

    _, store = made
    out = tmp_path / "s.parquet"
    mdclust.export(store, "color", method="zeroshot", out=out, format="parquet",
                   with_scores=True)
    rows = pq.read_table(out).to_pylist()
    st = Store(store)
    feats = load_image_features(st)
    names = sorted({r["name"] for r in rows})
    T = dict(zip(names, np.asarray(text_features(st, names, DEFAULT_TEMPLATE,
                                                 model=feats.key))))
    at = {p: i for i, p in enumerate(feats.paths)}
    for r in rows:
        assert r["score"] == pytest.approx(float(feats.vectors[at[r["path"]]] @ T[r["name"]]),
                                           abs=1e-5)
    # zero-shot puts each image with the name it is most similar to among the kept names
    for r in rows:
        assert r["score"] >= max(float(feats.vectors[at[r["path"]]] @ T[n]) for n in names) \
            - 1e-5
    text = run(store, "export", "--interest", "color", "--method", "zeroshot",
               "--with-scores").stdout.decode()
    assert text.splitlines()[0] == "path,cluster,name,score"


def test_bad_export_requests_are_one_line_errors(made, tmp_path):
    _, store = made
    for args, msg in ((["--method", "kmeans", "--format", "parquet"], "give --out"),
                      (["--method", "kmeans", "--format", "xml"], "unknown --format"),
                      (["--method", "kmeans", "--with-scores"], "needs named clusters")):
        err = run(store, "export", *args, code=2).stderr.decode()
        assert msg in err and err.count("\n") == 1, err


def test_to_folders_links_every_image_once_and_a_rerun_replaces_the_tree(made, tmp_path):
    work, store = made
    out = tmp_path / "by colour"
    res = mdclust.export_folders(store, "color", method="zeroshot", out=out)
    assert res.linked == 120 and res.missing == 0 and (out / FOLDERS_MARKER).is_file()
    links = [p for p in out.rglob("*") if p.is_symlink()]
    targets = sorted(os.path.realpath(p) for p in links)
    images = sorted(os.path.realpath(p) for p in (work / "images").glob("*.png"))
    assert targets == images  # every image once
    got = mdclust.load_clustering(store, "color", method="zeroshot")
    folder_of = {os.path.realpath(p): p.parent.name for p in links}
    for path, label in zip(got.paths, got.labels):
        assert folder_of[os.path.realpath(work / "images" / path)] == res.folders[label]
    assert sorted(res.folders) == sorted(p.name for p in out.iterdir() if p.is_dir())
    (out / res.folders[0] / "stale.txt").write_text("from before")
    again = mdclust.export_folders(store, method="kmeans", out=out)
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(again.folders)
    assert not (out / res.folders[0] / "stale.txt").exists()
    assert again.folders == ["cluster-0", "cluster-1", "cluster-2"]  # no names
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_to_folders_refuses_a_folder_it_did_not_make(made, tmp_path):
    _, store = made
    mine = tmp_path / "photos"
    mine.mkdir()
    (mine / "keep.jpg").write_bytes(b"x")
    err = run(store, "export", "--method", "kmeans", "--to-folders", str(mine),
              code=2).stderr.decode()
    assert "was not made by `export --to-folders`" in err
    assert [p.name for p in mine.iterdir()] == ["keep.jpg"]


def test_to_folders_can_copy(made, tmp_path):
    _, store = made
    res = mdclust.export_folders(store, method="kmeans", out=tmp_path / "c", copy=True)
    files = [p for p in (tmp_path / "c").rglob("*.png")]
    assert len(files) == res.linked == 120 and not any(p.is_symlink() for p in files)


@pytest.mark.parametrize("name,safe", [
    ("red", "red"), ("a/b", "a_b"), ("..", ""), ("../../etc", "_.._etc"), ("CON", "_CON"),
    ("nul.txt", "_nul.txt"), ("com1", "_com1"), ("x\x01y", "x_y"), (".hidden", "hidden"),
    ("name. ", "name"), ('a:b*c?"<>|', "a_b_c_____"), ("back\\slash", "back_slash"),
    ("", ""), ("  ", "")])
def test_folder_names_are_safe_on_every_os(name, safe):
    assert safe_name(name) == safe


def test_colliding_or_empty_names_get_their_cluster_number():
    assert folder_names(["red", "Red", "..", "blue"], 5) == [
        "red 0", "Red 1", "cluster-2", "blue", "cluster-4"]


def test_scores_in_csv_follow_the_csv_rules(made, tmp_path):
    """--with-scores writes its CSV through the same writer as the plain export (its CSV rules
    included): the rows are the plain export's, with a score in [-1, 1] added."""
    work, store = made
    plain = csv_rows(store, "--interest", "color", "--method", "zeroshot")
    scored = list(csv.DictReader(io.StringIO(run(
        store, "export", "--interest", "color", "--method", "zeroshot", "--with-scores",
        "--raw").stdout.decode(), newline="")))
    assert [{k: r[k] for k in ("path", "cluster", "name")} for r in scored] == plain
    assert all(-1 <= float(r["score"]) <= 1 for r in scored)
