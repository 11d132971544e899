"""`mdclust embed --features`: features computed elsewhere (a plain open_clip script here, saved
in clip-retrieval's layout and as .npy + paths files) imported, clustered and evaluated like
embedded ones; bad files are one line, exit 2, the store unchanged. Real files throughout."""

import hashlib
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import MDCLUST

import mdclust
from mdclust.datasets import generate_shapes


def open_clip_features(folder: Path) -> tuple[np.ndarray, list[str]]:
    """The bundled model run as a user would without mdclust's embed: open_clip's own
    create_model_and_transforms and encode_image, images in sorted order."""
    import open_clip
    import torch
    from PIL import Image

    from mdclust.core.encoders import BUNDLED_WEIGHTS, register_configs

    register_configs()
    model, _, pre = open_clip.create_model_and_transforms(
        "mdclust-tiny", pretrained=str(BUNDLED_WEIGHTS["mdclust-tiny"]))
    model.eval()
    files = sorted(p.name for p in folder.glob("*.png"))
    with torch.no_grad():
        x = torch.stack([pre(Image.open(folder / f).convert("RGB")) for f in files])
        f = torch.nn.functional.normalize(model.encode_image(x), dim=-1)
    return f.numpy().astype(np.float32), files


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    work = tmp_path_factory.mktemp("import")
    labels = generate_shapes(work / "images", n=120, seed=4)
    feats, files = open_clip_features(work / "images")
    return work, labels, feats, files


def clip_retrieval_layout(where: Path, feats, paths, shards=2):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (where / "img_emb").mkdir(parents=True)
    (where / "metadata").mkdir()
    for i, rows in enumerate(np.array_split(np.arange(len(paths)), shards)):
        np.save(where / "img_emb" / f"img_emb_{i}.npy", feats[rows].astype(np.float16))
        pq.write_table(pa.table({"image_path": [paths[r] for r in rows],
                                 "caption": ["" for _ in rows]}),
                       where / "metadata" / f"metadata_{i}.parquet")


def run(store, *args, code=0):
    done = subprocess.run([MDCLUST, *args, "--store", str(store)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == code, done.stderr[-2000:]
    return done


def test_imported_features_cluster_and_evaluate_as_embedded_ones(world, tmp_path):
    work, labels, feats, files = world
    embedded = tmp_path / "embedded.h5"
    mdclust.embed(work / "images", embedded, model="mdclust-tiny", labels=labels, workers=0)
    layout_dir = tmp_path / "clip-retrieval"
    shuffled = np.random.default_rng(0).permutation(len(files))  # any order in the files
    clip_retrieval_layout(layout_dir, feats[shuffled],
                          [str(work / "images" / files[i]) for i in shuffled])
    imported = tmp_path / "imported.h5"
    res = mdclust.embed(None, imported, features=layout_dir, model="mdclust-tiny",
                        labels=labels)
    assert res.imported == res.images == 120 and res.embedded == 0
    assert res.labels_aspects and res.labels_missing == 0
    got = {}
    for name, store in (("embedded", embedded), ("imported", imported)):
        c = mdclust.cluster(store, method="kmeans", k=4, seed=0)
        ev = mdclust.evaluate(store, method="kmeans", aspect="count")
        got[name] = (c.paths, c.labels.tolist(), ev.nmi)
    assert got["imported"][0] == got["embedded"][0]  # the same images, same order
    assert got["imported"][1] == got["embedded"][1]  # the same labels, same k-means seed
    assert got["imported"][2] == pytest.approx(got["embedded"][2])
    info = mdclust.info(imported)
    assert info.to_json()["images"] == 120
    # the text side works from the model named on import
    mdclust.candidates(imported, "color", from_file=Path(__file__).parents[1] / "examples" /
                       "interests" / "shapes" / "color.txt", k=4)
    assert mdclust.cluster(imported, "color", method="zeroshot").k == 4


def test_npy_with_a_relative_paths_file_and_a_rerun_replaces(world, tmp_path):
    work, labels, feats, files = world
    np.save(work / "feats.npy", feats)
    (work / "paths.txt").write_text("\n".join(f"images/{f}" for f in files) + "\n")
    store = tmp_path / "s.h5"
    out = run(store, "embed", "--features", str(work / "feats.npy"), "--paths",
              str(work / "paths.txt"), "--model", "mdclust-tiny").stdout
    assert "120 image features imported" in out
    again = mdclust.embed(None, store, features=work / "feats.npy", paths=work / "paths.txt",
                          model="mdclust-tiny")
    assert again.imported == 120
    err = run(store, "embed", str(work / "images"), "--model", "mdclust-tiny", code=2).stderr
    assert "holds imported features" in err and err.count("\n") == 1


def digest(path: Path) -> str:
    files = [path, *sorted(path.with_name(path.name + ".data").glob("*"))]
    return hashlib.sha256(b"".join(p.read_bytes() for p in files if p.is_file())).hexdigest()


def test_bad_feature_files_are_one_line_and_leave_the_store(world, tmp_path):
    work, labels, feats, files = world
    store = tmp_path / "s.h5"
    np.save(tmp_path / "ok.npy", feats)
    paths = tmp_path / "paths.csv"
    paths.write_text("path\n" + "\n".join(str(work / "images" / f) for f in files) + "\n")
    mdclust.embed(None, store, features=tmp_path / "ok.npy", paths=paths, model="mdclust-tiny")
    before = digest(store)
    nan = feats.copy()
    nan[7, 3] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    np.save(tmp_path / "wide.npy", np.hstack([feats, feats]))
    np.save(tmp_path / "ints.npy", (feats * 100).astype(np.int32))
    dup = tmp_path / "dup.txt"
    dup.write_text("\n".join([str(work / "images" / files[0])] * 2 + [
        str(work / "images" / f) for f in files[2:]]) + "\n")
    short = tmp_path / "short.txt"
    short.write_text("\n".join(str(work / "images" / f) for f in files[:-1]) + "\n")
    cases = [(["--features", str(tmp_path / "wide.npy"), "--paths", str(paths)],
              "dimension 128 but mdclust-tiny's text tower has 64"),
             (["--features", str(tmp_path / "nan.npy"), "--paths", str(paths)],
              "feature row 7"),
             (["--features", str(tmp_path / "ok.npy"), "--paths", str(dup)], "duplicate path"),
             (["--features", str(tmp_path / "ok.npy"), "--paths", str(short)],
              "has 120 rows but"),
             (["--features", str(tmp_path / "ok.npy"), "--paths", str(tmp_path / "no.txt")],
              "paths file not found"),
             (["--features", str(tmp_path / "ok.npy")], "needs --paths"),
             (["--features", str(tmp_path / "ints.npy"), "--paths", str(paths)],
              "floating point"),
             (["--features", str(tmp_path)], "img_emb")]
    # the first through the CLI (exit 2, one line), the rest through the API (the same checks)
    err = run(store, "embed", *cases[0][0], "--model", "mdclust-tiny", code=2).stderr
    assert cases[0][1] in err and err.count("\n") == 1, err
    for args, msg in cases[1:]:
        features = args[1]
        paths = args[3] if len(args) > 2 else None
        with pytest.raises(mdclust.BadInput, match=re.escape(msg)):
            mdclust.embed(None, store, features=features, paths=paths, model="mdclust-tiny")
        assert digest(store) == before
    assert digest(store) == before
