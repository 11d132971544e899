"""`mdclust embed --from-list`: images spread over folders, named by a text, CSV or Parquet list
(real files, real store); incremental like a folder."""

import subprocess

import numpy as np
from conftest import MDCLUST

import mdclust
from mdclust.core.features import load_image_features
from mdclust.core.store import Store
from mdclust.datasets import generate_shapes


def test_a_list_over_two_folders_embeds_like_a_folder_and_reruns_incrementally(tmp_path):
    generate_shapes(tmp_path / "all", n=40, seed=2)
    files = sorted((tmp_path / "all").glob("*.png"))
    for i, f in enumerate(files):  # spread over two folders, as a real collection is
        (tmp_path / "shoot" / ("a" if i % 2 else "b")).mkdir(parents=True, exist_ok=True)
        f.rename(tmp_path / "shoot" / ("a" if i % 2 else "b") / f.name)
    listed = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "shoot").rglob("*.png"))
    lst = tmp_path / "list.txt"
    lst.write_text("\n".join(listed[:30]) + "\n")
    store = tmp_path / "s.h5"
    res = mdclust.embed(None, store, from_list=lst, model="mdclust-tiny", workers=0)
    assert res.images == res.embedded == 30
    by_folder = tmp_path / "f.h5"
    mdclust.embed(tmp_path / "shoot", by_folder, model="mdclust-tiny", workers=0)
    a, b = load_image_features(Store(store)), load_image_features(Store(by_folder))
    rows = {p: i for i, p in enumerate(b.paths)}
    assert all(p in rows for p in a.paths) and a.paths[0].startswith(("a/", "b/"))
    assert np.allclose(a.vectors, b.vectors[[rows[p] for p in a.paths]], atol=1e-3)
    again = mdclust.embed(None, store, from_list=lst, model="mdclust-tiny", workers=0)
    assert again.embedded == 0 and again.reused == 30  # nothing changed: nothing encoded
    # the same list as Parquet, two more images and one that is not there
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"path": listed[:32] + ["shoot/a/gone.png"]}),
                   tmp_path / "list.parquet")
    more = mdclust.embed(None, store, from_list=tmp_path / "list.parquet",
                         model="mdclust-tiny", workers=0)
    assert more.embedded == 2 and more.images == 32
    assert ("a/gone.png", "listed but not found") in more.skipped


def test_bad_lists_are_one_line_errors(tmp_path):
    store = tmp_path / "s.h5"
    for args, msg in ((["--from-list", str(tmp_path / "none.txt")], "list file not found"),
                      (["--from-list", str(tmp_path / "empty.txt")], "lists no paths"),
                      ([str(tmp_path), "--from-list", str(tmp_path / "empty.txt")],
                       "one of them")):
        (tmp_path / "empty.txt").write_text("\n")
        done = subprocess.run([MDCLUST, "embed", *args, "--model", "mdclust-tiny", "--store",
                               str(store)], capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and msg in done.stderr and done.stderr.count("\n") == 1, \
            done.stderr
    assert not store.exists()
