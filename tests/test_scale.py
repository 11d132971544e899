"""Scale: faiss k-means against scikit-learn, streamed reads, chunked zero-shot. The speed
and memory figures are in benchmarks/scale.py and docs/benchmarks.md, not here."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import normalized_mutual_info_score as nmi

import mdclust
from mdclust.core import features as features_mod
from mdclust.methods import baselines


def blobs(n=6000, d=64, k=12, seed=0, spread=0.35):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d))
    y = rng.integers(0, k, n)
    X = centres[y] + spread * rng.normal(size=(n, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X.astype(np.float32), y


@pytest.mark.parametrize("spherical", [False, True])
def test_faiss_agrees_with_scikit_learn(spherical):
    X, y = blobs()
    a = baselines.kmeans(X, 12, seed=0, spherical=spherical, backend="sklearn")
    b = baselines.kmeans(X, 12, seed=0, spherical=spherical, backend="faiss")
    assert nmi(a, b) >= 0.95
    assert nmi(y, b) >= 0.9  # and both find the planted groups
    # same seed, same labels; n_init initialisations, the best kept
    np.testing.assert_array_equal(b, baselines.kmeans(X, 12, seed=0, spherical=spherical,
                                                      backend="faiss"))


def test_faiss_assigns_every_row_beyond_its_training_sample(monkeypatch):
    monkeypatch.setattr(baselines, "FAISS_POINTS_PER_CENTROID", 40)  # trains on 480 rows
    monkeypatch.setattr(baselines, "ASSIGN_CHUNK", 1000)
    X, y = blobs(n=5000)
    labels = baselines.kmeans(X, 12, seed=3, backend="faiss")
    assert labels.shape == (5000,) and set(labels) == set(range(12))
    assert nmi(y, labels) >= 0.9


@pytest.mark.parametrize("backend", ["faiss", "sklearn"])
def test_kmeans_on_rows_built_on_demand_equals_kmeans_on_the_array(monkeypatch, backend):
    """LaIC's [E; V] is never held whole: the same sample rows and the same blocks give the
    same labels as the materialised matrix."""
    from mdclust.core.rows import ConcatRows

    monkeypatch.setattr(baselines, "FAISS_POINTS_PER_CENTROID", 40)  # a sample of 480 rows
    monkeypatch.setattr(baselines, "ASSIGN_CHUNK", 700)
    X, y = blobs(n=5000)
    V = blobs(n=5000, d=16, seed=2)[0].astype(np.float16)
    rows = ConcatRows(X, V)
    whole = np.hstack([X, V.astype(np.float32)])
    np.testing.assert_array_equal(rows[[3, 1, 4999]], whole[[3, 1, 4999]])
    np.testing.assert_array_equal(rows[4990:6000], whole[4990:])
    np.testing.assert_array_equal(np.asarray(rows, dtype=np.float32), whole)
    a = baselines.kmeans(rows, 12, seed=1, backend=backend)
    np.testing.assert_array_equal(a, baselines.kmeans(whole, 12, seed=1, backend=backend))
    assert nmi(y, a) >= 0.9
    with pytest.raises(ValueError, match="same number of rows"):
        ConcatRows(X, V[:10])


def test_auto_picks_faiss_from_the_threshold_and_a_bad_name_is_refused(monkeypatch):
    assert baselines.backend_for("auto", baselines.FAISS_MIN_ROWS - 1) == "sklearn"
    assert baselines.backend_for("auto", baselines.FAISS_MIN_ROWS) == "faiss"
    assert baselines.backend_for("sklearn", 10 ** 7) == "sklearn"
    with pytest.raises(mdclust.BadInput, match="--backend must be one of auto, sklearn, faiss"):
        baselines.kmeans(np.zeros((4, 2), np.float32), 2, backend="cuml")


def test_zero_shot_in_chunks_equals_one_pass():
    X, _ = blobs(n=3000)
    T = blobs(n=40, seed=1)[0]
    whole = baselines.zero_shot(X, T, 5, chunk=10 ** 6)
    parts = baselines.zero_shot(X, T, 5, chunk=128)
    np.testing.assert_array_equal(whole[0], parts[0])
    np.testing.assert_array_equal(whole[1], parts[1])


def test_streamed_features_equal_a_whole_read_with_duplicates(tiny_store, monkeypatch):
    st = tiny_store
    whole = features_mod.load_image_features(st)
    monkeypatch.setattr(features_mod, "FEATURE_BLOCK", 3)
    streamed = features_mod.load_image_features(st)
    assert streamed.paths == whole.paths and streamed.shas == whole.shas
    np.testing.assert_allclose(streamed.vectors, whole.vectors, atol=0)
    # a duplicated content gets its row in both places
    dup = [i for i, s in enumerate(whole.shas) if whole.shas.count(s) > 1]
    assert dup, "the fixture has a duplicate file"
    i, j = dup[0], [k for k in dup if whole.shas[k] == whole.shas[dup[0]]][1]
    np.testing.assert_array_equal(streamed.vectors[i], streamed.vectors[j])
    # and the matrix is what the store holds, normalised, in image-table order
    g = st.read_group(f"features/{whole.key}")
    row = list(g["sha256"]).index(whole.shas[5])
    v = g["vectors"][row].astype(np.float32)
    np.testing.assert_allclose(streamed.vectors[5], v / np.linalg.norm(v), rtol=1e-6)


def test_features_are_read_once_while_shared_and_again_when_the_images_change(tiny_store,
                                                                                tmp_path):
    from conftest import TINY, write_images

    from mdclust.cli import _reading_once

    st = tiny_store
    assert features_mod.load_image_features(st) is not features_mod.load_image_features(st)
    with mdclust.shared_features():
        first = features_mod.load_image_features(st)
        assert features_mod.load_image_features(st) is first
        with pytest.raises(ValueError, match="read-only"):  # the next method gets it as read
            first.vectors[0, 0] = 0
        # new images: the memo is stale, the next read sees them
        write_images(tmp_path / "imgs", 2, seed=9, size=(24, 24), prefix="new")
        mdclust.embed(tmp_path / "imgs", st, model=TINY, pretrained="random", workers=0)
        again = features_mod.load_image_features(st)
        assert again is not first and len(again.paths) == len(first.paths) + 2
    assert features_mod._REUSE is None  # nothing kept outside the block
    fresh = features_mod.load_image_features(st)
    assert fresh.paths == again.paths
    np.testing.assert_array_equal(fresh.vectors, again.vectors)
    # the CLI's loop over several methods runs inside it, and leaves nothing behind
    seen = [features_mod._REUSE is not None for _ in _reading_once(["kmeans", "zeroshot"])]
    assert seen == [True, True] and features_mod._REUSE is None


def test_cluster_and_eval_take_a_backend(tiny_store, tmp_path):
    path = tiny_store.path
    res = mdclust.cluster(path, method="kmeans", k=3, backend="faiss")
    assert sum(res.sizes) == res.n
    assert tiny_store.attrs("clusterings/kmeans")["params"]["backend"] == "faiss"
    mdclust.cluster(path, method="kmeans", k=3)
    assert tiny_store.attrs("clusterings/kmeans")["params"]["backend"] == "sklearn"  # auto, small
    done = subprocess.run([str(Path(sys.executable).with_name("mdclust")), "cluster", "--k", "3",
                           "--backend", "nope", "--store", str(path), "--json"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "mdclust: error: --backend must be one of auto, sklearn, faiss, not 'nope'"]


@pytest.fixture
def tiny_store(tmp_path):
    import shutil

    from conftest import TINY, write_images

    files = write_images(tmp_path / "imgs", 14, size=(24, 24))
    shutil.copy(files[2], tmp_path / "imgs" / "copy.png")  # same content, two paths
    st = mdclust.Store(tmp_path / "s.h5")
    mdclust.embed(tmp_path / "imgs", st, model=TINY, pretrained="random", workers=0)
    return st


def test_json_of_cluster_names_the_backend_used(tiny_store):
    done = subprocess.run([str(Path(sys.executable).with_name("mdclust")), "cluster", "--k", "2",
                           "--backend", "faiss", "--store", str(tiny_store.path), "--json"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["n"] == 15


@pytest.mark.parametrize("backend", ["faiss", "sklearn"])
def test_gradnorm_labels_are_what_eval_reclusters(tiny_store, tmp_path, backend):
    """`cluster` runs k-means on [E; V] with V as it stores it (float16), so eval's seed-0 run
    on the stored features gives back the stored labels."""
    from mdclust.core import layout
    from mdclust.core.features import clustering_features
    from mdclust.core.rows import ConcatRows

    words = tmp_path / "w.txt"
    words.write_text("\n".join(f"word{i}" for i in range(30)))
    mdclust.candidates(tiny_store, "thing", from_file=words, k=3)
    mdclust.filter_nouns(tiny_store, "thing", method="gradnorm", k=3)
    res = mdclust.cluster(tiny_store, "thing", method="gradnorm", seed=0, backend=backend)
    group = layout.read_clustering(tiny_store, "thing", "gradnorm")
    assert group["text_counterpart"].dtype == np.float16
    X = clustering_features(tiny_store, group)
    assert isinstance(X, ConcatRows) and X.shape == (15, 2 * group["text_counterpart"].shape[1])
    np.testing.assert_array_equal(baselines.kmeans(X, 3, seed=0, backend=backend), res.labels)


def test_stages_reading_features_from_the_store_match_the_in_memory_results(
        tiny_store, tmp_path, monkeypatch):
    """Past MDCLUST_FEATURES_IN_MEMORY_GB the stages read the features block by block from
    the store (StoredRows, 10M images): the same labels, names, scores and exemplars."""
    from mdclust.core.features import StoredRows
    from mdclust.core.rows import nearest_to_means

    words = tmp_path / "w.txt"
    words.write_text("\n".join(f"word{i}" for i in range(30)))
    mdclust.candidates(tiny_store, "thing", from_file=words, k=3)
    mdclust.filter_nouns(tiny_store, "thing", method="gradnorm", k=3)

    def run():
        out = {}
        for method in ("kmeans", "zeroshot", "gradnorm"):
            res = mdclust.cluster(tiny_store, None if method == "kmeans" else "thing",
                                  method=method, k=3, backend="faiss",
                                  names_from="thing" if method == "kmeans" else None)
            ev = mdclust.evaluate(tiny_store, None if method == "kmeans" else "thing",
                                  method=method)
            out[method] = (res.labels.tolist(), res.names, ev.stability, ev.silhouette,
                           ev.interest_agreement)
        scores = tmp_path / "scores.csv"
        mdclust.export(tiny_store, method="kmeans", out=scores, with_scores=True)
        return out, scores.read_text()

    whole = run()
    monkeypatch.setenv(features_mod.IN_MEMORY_BYTES_ENV, "0")
    monkeypatch.setattr(features_mod, "FEATURE_BLOCK", 4)  # 15 images in four blocks
    feats = features_mod.load_image_features(tiny_store)
    assert isinstance(feats.vectors, StoredRows)
    streamed = run()
    assert streamed == whole
    # the rows themselves, by slice, index array (any order, repeats) and whole
    ref = features_mod.load_image_features(tiny_store, stream=False).vectors
    np.testing.assert_allclose(feats.vectors[2:13], ref[2:13], rtol=1e-6)
    np.testing.assert_allclose(feats.vectors[[14, 0, 3, 3]], ref[[14, 0, 3, 3]], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(feats.vectors), ref, rtol=1e-6)
    # and the report's exemplars: the members nearest each cluster's mean, ties in order
    labels = np.arange(15) % 3
    got = nearest_to_means(feats.vectors, np.arange(15), labels, 3, 2)
    for c in range(3):
        members = np.flatnonzero(labels == c)
        centre = ref[members].mean(0)
        want = members[np.argsort(-(ref[members] @ centre), kind="stable")[:2]]
        np.testing.assert_array_equal(got[c], want)
    report = mdclust.report(tiny_store, tmp_path / "report")
    assert report.clusterings == 3


def test_runs_in_two_passes_give_each_run_its_own_labels(monkeypatch):
    """eval's runs share their passes over the rows (kmeans_runs) and give exactly what one
    kmeans per seed gives, on an array and on rows assembled on demand."""
    from mdclust.core.rows import ConcatRows

    monkeypatch.setattr(baselines, "FAISS_POINTS_PER_CENTROID", 40)  # samples of 480 rows
    monkeypatch.setattr(baselines, "ASSIGN_CHUNK", 700)
    X, _ = blobs(n=5000)
    V = blobs(n=5000, d=16, seed=2)[0].astype(np.float16)
    for data in (X, ConcatRows(X, V)):
        runs = baselines.kmeans_runs(data, 12, range(4), backend="faiss")
        for seed, labels in enumerate(runs):
            np.testing.assert_array_equal(labels, baselines.kmeans(data, 12, seed=seed,
                                                                    backend="faiss"))
    assert len({tuple(r) for r in runs}) > 1  # the seeds differ
