import csv
import os
import shutil

import numpy as np
import pytest
from conftest import TINY, write_images

from mdclust.core.encoders import ClipEncoder, model_spec
from mdclust.core.errors import MdclustError
from mdclust.core.features import load_image_features, resolve_model_key
from mdclust.core.images import load_rgb
from mdclust.core.store import Store
from mdclust.stages.embed import embed


def run(images, store_path, **kw):
    kw.setdefault("model", TINY)
    kw.setdefault("pretrained", "random")
    kw.setdefault("workers", 0)
    kw.setdefault("batch_size", 5)
    return embed(images, Store(store_path), **kw)


def direct_features(paths, pretrained="random"):
    import torch

    enc = ClipEncoder(model_spec(TINY, pretrained), device="cpu")
    pixels = torch.stack([enc.preprocess(load_rgb(p)) for p in paths])
    return enc.encode_images(pixels)


def test_features_match_a_direct_forward_and_are_unit_norm(images, store_path):
    res = run(images, store_path)
    assert (res.images, res.embedded, res.skipped) == (12, 12, [])
    feats = load_image_features(Store(store_path))
    assert feats.vectors.shape == (12, 64)
    np.testing.assert_allclose(np.linalg.norm(feats.vectors, axis=1), 1.0, atol=1e-3)
    expected = direct_features([images / p for p in feats.paths])
    np.testing.assert_allclose(feats.vectors, expected, atol=2e-3)
    assert feats.paths == sorted(feats.paths)


def test_rerun_on_unchanged_folder_loads_no_model(images, store_path):
    run(images, store_path)
    again = run(images, store_path)
    assert again.embedded == 0 and again.reused == 12
    assert again.model_loaded is False


def test_parallel_decoding_gives_the_same_rows(images, tmp_path):
    run(images, tmp_path / "a.h5", workers=0)
    run(images, tmp_path / "b.h5", workers=2, batch_size=4)
    a = load_image_features(Store(tmp_path / "a.h5"))
    b = load_image_features(Store(tmp_path / "b.h5"))
    assert a.paths == b.paths
    np.testing.assert_allclose(a.vectors, b.vectors, atol=1e-3)


def test_duplicates_changes_and_deletions(images, store_path):
    run(images, store_path)
    shutil.copy(images / "img0000.png", images / "copy-of-0.png")
    write_images(images / "new", 2, seed=7, prefix="n")  # two new, distinct files
    (images / "sub" / "img0001.png").unlink()
    changed = images / "img0002.png"
    write_images(images / "tmp", 1, seed=99, prefix="c")
    shutil.move(images / "tmp" / "c0000.png", changed)
    os.utime(changed, (1e9, 1e9))

    res = run(images, store_path)
    assert res.embedded == 3  # the two new files and the changed one; the copy is reused
    assert res.dropped == 1
    st = Store(store_path)
    feats = load_image_features(st)
    assert "sub/img0001.png" not in feats.paths
    i, j = feats.paths.index("copy-of-0.png"), feats.paths.index("img0000.png")
    np.testing.assert_array_equal(feats.vectors[i], feats.vectors[j])
    rows = st.read_group(f"features/{feats.key}")
    assert len(rows["sha256"]) == len(set(rows["sha256"])) == res.images - 1
    np.testing.assert_allclose(feats.vectors[feats.paths.index("img0002.png")],
                               direct_features([changed])[0], atol=2e-3)


def test_bad_files_are_skipped_with_reasons_and_not_retried(images, store_path):
    (images / "empty.png").write_bytes(b"")
    (images / "notes.jpg").write_text("not an image")
    good = (images / "img0000.png").read_bytes()
    (images / "half.png").write_bytes(good[: len(good) // 3])
    res = run(images, store_path)
    reasons = dict(res.skipped)
    assert reasons["empty.png"] == "empty file"
    assert reasons["notes.jpg"].startswith("not an image")
    assert reasons["half.png"].startswith("corrupt or truncated")
    assert res.images == 12
    again = run(images, store_path)
    assert dict(again.skipped) == reasons and again.model_loaded is False


def test_two_models_live_side_by_side(images, store_path, tmp_path):
    import torch

    enc = ClipEncoder(model_spec(TINY, "random"), device="cpu")
    weights = tmp_path / "tiny-weights.pt"
    with torch.no_grad():
        for p in enc.model.parameters():
            p.mul_(1.5)
    torch.save(enc.model.state_dict(), weights)

    run(images, store_path)
    res = run(images, store_path, pretrained=str(weights))
    assert res.embedded == 12 and res.model_key.startswith(f"{TINY}@file-")
    st = Store(store_path)
    with pytest.raises(MdclustError, match="several models.*(@random.*@file-|@file-.*@random)"):
        resolve_model_key(st)
    assert resolve_model_key(st, f"{TINY}@random") == f"{TINY}@random"
    with pytest.raises(MdclustError, match="matches several"):
        resolve_model_key(st, TINY)
    random_f = load_image_features(st, f"{TINY}@random")
    file_f = load_image_features(st, res.model_key)
    assert not np.allclose(random_f.vectors, file_f.vectors, atol=1e-2)
    np.testing.assert_allclose(file_f.vectors,
                               direct_features([images / p for p in file_f.paths], str(weights)),
                               atol=2e-3)


def test_labels_are_stored_and_unknown_paths_reported(images, store_path, tmp_path):
    csv_path = tmp_path / "labels.csv"
    with open(csv_path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "color", "shape"])
        w.writerow(["img0000.png", "red", "circle"])
        w.writerow([str(images / "sub" / "img0001.png"), "blue", "square"])
        w.writerow(["ghost.png", "green", "star"])
    res = run(images, store_path, labels=csv_path)
    assert res.labels_aspects == ["color", "shape"]
    assert res.labels_unknown == ["ghost.png"]
    assert res.labels_missing == 2 * 10
    g = Store(store_path).read_group("labels")
    lab = dict(zip(g["path"], g["color"]))
    assert lab["img0000.png"] == "red" and lab["sub/img0001.png"] == "blue"
    assert g.attrs["aspects"] == ["color", "shape"]


def test_bad_input_leaves_store_alone(images, store_path, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MdclustError, match="no image files"):
        run(empty, store_path)
    assert not store_path.exists()
    with pytest.raises(MdclustError, match="not found"):
        run(tmp_path / "missing", store_path)
    run(images, store_path)
    before = store_path.read_bytes()
    other = tmp_path / "other"
    write_images(other, 2)
    with pytest.raises(MdclustError, match="holds images from"):
        run(other, store_path)
    with pytest.raises(MdclustError, match="unknown model"):
        run(images, store_path, model="no-such-model")
    with pytest.raises(MdclustError, match="first column must be 'path'"):
        bad = tmp_path / "bad.csv"
        bad.write_text("file,color\na.png,red\n")
        run(images, store_path, labels=bad)
    assert store_path.read_bytes() == before


class RecordingBar:
    """Stands in for the rich progress bar: {label: [total, advanced]}."""

    def __init__(self):
        self.tasks: dict[str, list[int]] = {}

    def add_task(self, label, total):
        self.tasks[label] = [total, 0]
        return label

    def advance(self, task, n):
        self.tasks[task][1] += n


def test_views_share_the_batch_runner_one_journal_file_per_batch(images, store_path):
    from mdclust.core import journal
    from mdclust.core.images import sha256_file
    from mdclust.stages import views as views_mod

    (images / "notes.png").write_text("not an image")
    items = [(sha256_file(p), p) for p in sorted(images.rglob("*.png"))]
    enc = ClipEncoder(model_spec(TINY, "random"), device="cpu")
    bar = RecordingBar()
    # batch 8 with 3 views: 2 images per forward, so 7 batches for 13 files
    assert views_mod.run(Store(store_path), enc, items, ("crop",), 3, batch_size=8, workers=0,
                         bar=bar) == 13
    assert bar.tasks == {"views (crop x3)": [13, 13]}  # the failed file counted, once
    batches = journal.read_batches(Store(store_path), views_mod.JOURNAL_KIND)
    assert len(batches) == 7  # notes.png shares its batch with a good image
    shas = [str(s) for _, z in batches for s in z["sha"]]
    assert sorted(shas) == sorted(s for s, p in items if p.name != "notes.png")
    assert all(z["vectors"].shape[1:] == (3, 64) and len(z["sha"]) <= 2 for _, z in batches)


def test_offline_loads_bundled_and_random_weights(images, store_path):
    assert run(images, store_path, offline=True).embedded == 12
    res = run(images, store_path, model="mdclust-tiny", pretrained=None, offline=True)
    assert res.embedded == 12 and res.model_key.startswith("mdclust-tiny@file-")
