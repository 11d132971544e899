"""Hubness correction (methods/hubness.py): a word near every image stops taking them all, in
zero-shot, GradNorm's text counterparts, cluster names and the k estimate; `auto` turns it on
for WordNet candidate lists only, and a real store records what was used."""

import csv
import json
import subprocess

import numpy as np
import pytest
from conftest import MDCLUST, shapes_store
from sklearn.metrics import normalized_mutual_info_score as nmi

import mdclust
from mdclust.core.errors import BadInput
from mdclust.methods import gradnorm as gn
from mdclust.methods import hubness as hub
from mdclust.methods.baselines import name_clusters, zero_shot
from mdclust.methods.kselect import by_votes


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def planted(n_per=60, seed=0):
    """Three groups of images, a word for each, and a hub word nearer every image than any
    group's own word is: the images share one direction (CLIP's modality gap), and the hub
    lies along it, as "-ness" nouns land."""
    rng = np.random.default_rng(seed)
    axes = np.eye(8)[:3]
    y = np.repeat(np.arange(3), n_per)
    E = unit(2 * np.eye(8)[7] + axes[y] + 0.3 * rng.normal(size=(len(y), 8)))
    words = unit(axes + 0.05 * rng.normal(size=(3, 8)))
    hub_word = unit(np.eye(8)[7] + 0.1 * rng.normal(size=8))
    T = np.vstack([words, hub_word])
    assert ((E @ T.T).argmax(1) == 3).mean() > 0.9  # the hub is every image's nearest word
    return E.astype(np.float32), T.astype(np.float32), y


def test_resolve_auto_is_median_for_wordnet_lists_only():
    assert hub.resolve("auto", "wordnet") == "median"
    for source in ("llm", "file", "wordnet-all", None):
        assert hub.resolve("auto", source) == "none"
    assert hub.resolve("median", "llm") == "median" and hub.resolve("none", "wordnet") == "none"
    with pytest.raises(BadInput, match="unknown --hubness 'mean'"):
        hub.resolve("mean", "wordnet")


def test_word_medians_are_over_the_images_or_a_seeded_sample():
    E, T, _ = planted()
    assert hub.word_medians(E, T, "none") is None
    assert np.allclose(hub.word_medians(E, T, "median"), np.median(E @ T.T, axis=0), atol=1e-6)
    a, b = (hub.word_medians(E, T, "median", rows=50) for _ in range(2))
    assert np.array_equal(a, b) and not np.allclose(a, hub.word_medians(E, T, "median"))


def test_a_planted_hub_takes_every_image_unless_corrected():
    E, T, y = planted()
    shift = hub.word_medians(E, T, "median")
    plain, used = zero_shot(E, T, 3)
    assert list(used) == [3] or nmi(y, plain) < 0.2  # the hub alone (or nearly) is chosen
    fixed, used = zero_shot(E, T, 3, shift=shift)
    assert nmi(y, fixed) > 0.9 and sorted(used) == [0, 1, 2]
    # GradNorm's counterparts: plain they are all the hub word; corrected, each its group's
    V0 = gn.text_counterpart(E, T, shift=None)
    V1 = gn.text_counterpart(E, T, shift=shift)
    assert (V0 @ T[3] > 0.99).mean() > 0.9
    assert ((V1 @ T[:3].T).argmax(1) == y).mean() > 0.9
    # names: each group gets its own word rather than the hub for the biggest one
    pick, share = name_clusters(E, y, 3, T, shift=shift)
    assert list(pick) == [0, 1, 2] and share.min() > 0.9
    # the k estimate: three values, not the single word everyone prefers
    choice = by_votes(E, T, seed=0, hubness="median")
    assert choice.k == 3 and choice.to_json()["hubness"] == "median"
    assert "median cosine taken off" in choice.says()
    assert "hubness" not in by_votes(E, T, seed=0).to_json()


@pytest.fixture(scope="module")
def wordnet_store(tmp_path_factory):
    """300 generated images (seed 40, no benchmark set) with WordNet colour candidates."""
    work = tmp_path_factory.mktemp("hub")
    store, labels = shapes_store(work, 300, 40)
    truth = {r["path"]: r["color"] for r in csv.DictReader(open(labels))}
    k = len(set(truth.values()))
    mdclust.candidates(store, "color", source="wordnet", k=k)
    mdclust.filter_nouns(store, "color")
    return store, truth


def test_wordnet_colour_lists_are_corrected_by_default_and_recorded(wordnet_store):
    store, truth = wordnet_store
    score = {}
    for how in ("none", "auto"):
        for method in ("zeroshot", "gradnorm"):
            res = mdclust.cluster(store, "color", method=method, hubness=how)
            score[how, method] = nmi([truth[p] for p in res.paths], res.labels)
            if method == "zeroshot":  # the label-free reference is corrected whatever was run
                score[how, "agreement"] = mdclust.evaluate(
                    store, "color", method="zeroshot", runs=1).interest_agreement
            g = mdclust.Store(store).read_group(f"interests/color/clusterings/{method}", ())
            assert g.attrs["params"]["hubness"] == ("none" if how == "none" else "median")
    assert score["auto", "agreement"] > score["none", "agreement"], score
    assert score["auto", "zeroshot"] > score["none", "zeroshot"] + 0.1, score
    assert score["auto", "gradnorm"] > score["none", "gradnorm"] + 0.05, score
    # the CLI: the option, its provenance in --json's stored params, and a bad value
    done = subprocess.run([MDCLUST, "cluster", "-i", "color", "--method", "kmeans",
                           "--hubness", "median", "--store", str(store), "--json"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["names"] and json.loads(done.stdout)["hubness"] == "median"
    g = mdclust.Store(store).read_group("interests/color/clusterings/kmeans", ())
    assert g.attrs["params"]["names_hubness"] == "median"
    loaded = mdclust.load_clustering(store, "color", method="kmeans")
    assert loaded.hubness == "median" and loaded.k_choice == g.attrs["params"]["k_choice"]
    bad = subprocess.run([MDCLUST, "cluster", "-i", "color", "--method", "zeroshot",
                          "--hubness", "mean", "--store", str(store)],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown --hubness 'mean'" in bad.stderr
