import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, rand_score

from mdclust.core.metrics import accuracy, rand_index, scores


def test_permuted_labels_are_perfect():
    truth = ["a", "a", "b", "b", "c", "c"]
    pred = [2, 2, 0, 0, 1, 1]
    assert scores(truth, pred) == {"nmi": pytest.approx(1.0), "ari": pytest.approx(1.0),
                                   "acc": 1.0, "ri": 1.0}


def test_hand_made_accuracy_and_rand_index():
    truth = [0, 0, 0, 1, 1, 1]
    pred = [0, 0, 1, 1, 1, 1]  # one point misplaced
    assert accuracy(truth, pred) == pytest.approx(5 / 6)
    # pairs: 15; agreements counted by hand = 10
    assert rand_index(truth, pred) == pytest.approx(10 / 15)
    # more clusters than classes: the extra cluster cannot be matched
    assert accuracy([0, 0, 1, 1], [0, 1, 2, 3]) == pytest.approx(0.5)
    # fewer clusters than classes
    assert accuracy([0, 1, 2, 2], [0, 0, 0, 0]) == pytest.approx(0.5)


def test_agrees_with_sklearn_on_random_labels():
    rng = np.random.default_rng(0)
    for _ in range(20):
        t = rng.integers(0, 4, 200)
        p = rng.integers(0, 6, 200)
        s = scores(t, p)
        assert s["nmi"] == pytest.approx(normalized_mutual_info_score(t, p))
        assert s["ari"] == pytest.approx(adjusted_rand_score(t, p))
        assert s["ri"] == pytest.approx(rand_score(t, p))


def test_integer_labels_score_as_their_strings_do():
    """Cluster labels skip the detour through strings (10M rows); the scores are the same."""
    from mdclust.core.metrics import codes

    rng = np.random.default_rng(0)
    truth = rng.integers(0, 7, 500)
    pred = (truth + (rng.random(500) < 0.3) * rng.integers(0, 5, 500)) % 9
    as_text = scores([f"v{t}" for t in truth], [str(p) for p in pred])
    assert scores(truth, pred) == as_text
    assert scores(codes([f"v{t}" for t in truth]), pred) == as_text


def test_one_table_for_all_four_agrees_with_sklearn_closely_and_at_the_edges():
    rng = np.random.default_rng(1)
    cases = [(rng.integers(0, k, n), rng.integers(0, m, n)) for k, m, n in
             ((3, 5, 50), (10, 10, 5000), (2, 30, 700))]
    cases += [(np.zeros(20, int), np.zeros(20, int)), (np.zeros(20, int), np.arange(20) % 4),
              (np.arange(20) % 4, np.zeros(20, int)), (np.arange(9), np.arange(9))]
    for t, p in cases:
        s = scores(t, p)
        assert s["nmi"] == pytest.approx(normalized_mutual_info_score(t, p), rel=1e-12, abs=1e-15)
        assert s["ari"] == pytest.approx(adjusted_rand_score(t, p), rel=1e-12, abs=1e-15)
        assert s["ri"] == pytest.approx(rand_score(t, p), rel=1e-12)
