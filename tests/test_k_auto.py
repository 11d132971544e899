"""`--k auto` (methods/kselect.py, stages/kchoice.py) and the label-free scores of `eval`
(stages/label_free.py): planted clusters, a generated world, the CLI and API with no k."""

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import MDCLUST, shapes_store

import mdclust
from mdclust.datasets import read_vocabulary
from mdclust.methods import kselect

INTERESTS = Path(__file__).parents[1] / "examples" / "interests" / "shapes"


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def planted(k, n_per, d=32, spread=0.08, seed=0):
    rng = np.random.default_rng(seed)
    centres = unit(rng.normal(size=(k, d)))
    X = np.concatenate([c + spread * rng.normal(size=(n_per, d)) for c in centres])
    return unit(X), np.repeat(np.arange(k), n_per), centres


@pytest.mark.parametrize("k", [2, 3, 5, 8])
def test_well_separated_planted_clusters_give_their_k(k):
    X, _, _ = planted(k, 40, seed=k)
    choice = kselect.by_features(X, seed=0)
    assert choice.k == k and choice.how == "silhouette"
    assert set(choice.scores) == set(range(2, choice.k_max + 1))
    assert choice.scores[k] == max(choice.scores.values())


def test_votes_count_synonyms_once_and_ignore_words_no_image_takes():
    # 4 values; each value has two synonym words (near-identical text features), and there
    # are 6 words far from every image: k is 4, not 8 or 14
    rng = np.random.default_rng(1)
    X, _, centres = planted(4, 50, spread=0.05, seed=1)
    synonyms = [unit(c[None] + 0.02 * rng.normal(size=(2, 32))) for c in centres]
    far = unit(rng.normal(size=(6, 32)))
    far -= (far @ centres.T) @ centres  # orthogonal to every value: never the best match
    T = unit(np.concatenate([*synonyms, unit(far)]))
    choice = kselect.by_votes(X, T, seed=0)
    assert choice.k == 4 and choice.how == "votes"
    assert choice.k_max <= 8  # at most the words some image prefers


def test_a_given_k_is_exact_and_bad_values_are_bad_input():
    from mdclust.core.errors import BadInput
    from mdclust.methods.kselect import parse_k

    assert parse_k("auto") is None and parse_k(None) is None and parse_k("7") == 7
    for bad, msg in (("1", "at least 2"), ("many", "whole number or 'auto'"), ("2.5", "whole")):
        with pytest.raises(BadInput, match=msg):
            parse_k(bad)


def test_the_search_is_sampled_at_scale():
    X, _, _ = planted(3, 2000, seed=3)  # 6,000 rows: the search sees SEARCH_ROWS of them
    choice = kselect.by_features(X, k_max=6)
    assert choice.rows == kselect.SEARCH_ROWS and choice.k == 3


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """300 generated images (seed 11: neither a dev nor a test set of the benchmarks), no k
    given anywhere; colour's and background's candidates from the LLM-style lists."""
    work = tmp_path_factory.mktemp("kauto")
    store, labels = shapes_store(work, 300, 11)
    return work, store, read_vocabulary(work / "images")


def run(store, *args, code=0):
    done = subprocess.run([MDCLUST, *args, "--store", str(store)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == code, done.stderr[-2000:]
    return done


@pytest.mark.slow
def test_no_k_anywhere_through_the_cli_chooses_and_says_it(world, tmp_path):
    work, store, vocab = world
    k_true = len(vocab["color"]["present"])
    got = json.loads(run(store, "candidates", "--interest", "color", "--from-file",
                         str(INTERESTS / "color.txt"), "--json").stdout)
    assert got["k_choice"]["how"] == "votes"
    filt = run(store, "filter", "--interest", "color", "--json")
    assert "k = " in filt.stderr and "chosen (auto" in filt.stderr
    assert json.loads(filt.stdout)["k_choice"]["k"] == got["k_choice"]["k"]
    done = run(store, "cluster", "--interest", "color", "--method", "gradnorm", "--json")
    res = json.loads(done.stdout)  # stdout is the JSON alone; the k line is on stderr
    line = [x for x in done.stderr.splitlines() if x.startswith("mdclust: k = ")]
    assert len(line) == 1 and f"k = {res['k']} chosen" in line[0]
    assert abs(res["k"] - k_true) <= 1 and len(res["sizes"]) == res["k"]
    scores = res["k_choice"]["scores"]
    assert res["k_choice"]["how"] == "votes" and str(res["k"]) in scores
    assert list(map(int, scores)) == list(range(2, res["k_choice"]["k_max"] + 1))
    ev = json.loads(run(store, "eval", "--interest", "color", "--method", "gradnorm",
                        "--json").stdout)
    assert ev["k"] == res["k"] and ev["nmi"] > 0.6  # colour, the aspect v3 reads well
    assert ev["k_choice"] == res["k_choice"]  # the stored provenance
    run(store, "report", "--out", str(tmp_path / "report"), "--quiet")
    assert (tmp_path / "report" / "index.html").is_file()


def test_an_exact_k_stays_exact_and_is_not_announced(world):
    _, store, _ = world
    done = run(store, "cluster", "--method", "kmeans", "--k", "7", "--json")
    assert json.loads(done.stdout)["k"] == 7 and "chosen" not in done.stderr
    assert json.loads(done.stdout)["k_choice"]["how"] == "given"


def test_api_with_k_none_and_a_trained_method_keeps_its_k(world):
    _, store, vocab = world
    mdclust.candidates(store, "background", from_file=INTERESTS / "background.txt")
    res = mdclust.train(store, "background", method="multidproxy", k=None,
                        config=mdclust.methods.get("multidproxy").settings(k=0, epochs=60,
                                                                            refine_every=20))
    assert res.k_choice["how"] == "votes" and res.k == res.k_choice["k"]
    assert len(res.candidates) == res.k  # the refinement ended at the chosen k
    cl = mdclust.cluster(store, "background", method="multidproxy")
    assert cl.k == res.k and cl.k_choice["how"] == "trained"
    assert cl.k_choice["scores"] == res.k_choice["scores"]


def test_label_free_scores_tell_a_clustering_that_follows_the_interest(world):
    """k-means "by colour" follows what the image features follow, not colour: its
    agreement with colour's own words is low; zero-shot and GradNorm on colour agree."""
    _, store, vocab = world
    k = len(vocab["color"]["present"])
    mdclust.candidates(store, "color", from_file=INTERESTS / "color.txt", k=k)
    mdclust.filter_nouns(store, "color")
    scores = {}
    for method in ("kmeans", "zeroshot", "gradnorm"):
        mdclust.cluster(store, "color", method=method)
        scores[method] = mdclust.evaluate(store, "color", method=method)
    km, zs, gn = scores["kmeans"], scores["zeroshot"], scores["gradnorm"]
    assert km.k == zs.k == gn.k == k  # the k given to candidates
    # soft votes over a list of synonyms keep much word entropy: lower values than an argmax
    # NMI, the same order (docs/k.md)
    assert gn.interest_agreement > km.interest_agreement + 0.25
    assert zs.interest_agreement > km.interest_agreement + 0.25
    # ordered as NMI against the labels is
    assert (gn.interest_agreement > km.interest_agreement) == (gn.nmi > km.nmi)
    assert zs.stability is None and 0.5 < gn.stability <= 1 and 0.5 < km.stability <= 1
    for s in scores.values():
        assert -1 <= s.silhouette <= 1


def test_vote_nmi_is_nmi_when_votes_are_sure_and_sees_through_spread_votes():
    from sklearn.metrics import normalized_mutual_info_score as nmi

    from mdclust.stages.label_free import vote_nmi

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 50)
    words = np.eye(16)[:3]
    E = words[y] + 0.02 * rng.normal(size=(150, 16))
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    T = words.astype(np.float32)
    # sure votes (every image near one word): the NMI of the argmax, to the third decimal
    assert vote_nmi(E, T, y) == pytest.approx(1.0, abs=1e-3)
    shuffled = rng.permutation(y)
    assert vote_nmi(E, T, shuffled) == pytest.approx(nmi(shuffled, y), abs=0.02)
    # a fourth word as near to every image as its own: votes spread, but a clustering that
    # follows the groups still says more about them than a shuffled one does
    T4 = np.vstack([T, np.full(16, 0.25, dtype=np.float32) / np.linalg.norm(np.full(16, 0.25))])
    assert vote_nmi(E, T4, y) > vote_nmi(E, T4, shuffled) + 0.3
    # images halfway between two words: their argmax splits them by noise, and a clustering
    # that follows that split has an argmax NMI of 1; their soft votes say nothing either way
    mid = words[0] + words[1] + 0.002 * rng.normal(size=(150, 16))
    mid /= np.linalg.norm(mid, axis=1, keepdims=True)
    split = (mid @ T[:2].T).argmax(1)
    assert len(set(split)) == 2 and nmi(split, split) == 1.0
    assert vote_nmi(mid, T[:2], split) < 0.05
