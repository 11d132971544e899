"""benchmarks/quality.py: the dev/test discipline, and a --quick run end to end (slow)."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load():
    spec = importlib.util.spec_from_file_location("quality", ROOT / "benchmarks" / "quality.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_tune_mode_refuses_test_sets():
    q = load()
    assert not set(q.DEV_SEEDS) & set(q.TEST_SEEDS) and len(q.TEST_SEEDS) >= 3
    assert set(q.QUICK_SEEDS) <= set(q.TEST_SEEDS)
    for argv in (["--tune", "--seeds", str(q.TEST_SEEDS[0])], ["--tune", "--update-docs"],
                 ["--seeds", "1"]):
        with pytest.raises(SystemExit, match="--tune|--seeds"):
            q.main(argv)


def test_word_stats_counts_present_absent_and_unseen():
    q = load()
    s = q.word_stats(kept=["red", "navy", "gold"], candidates=["red", "blue", "navy", "gold",
                                                                "ivory"],
                     present=["red", "blue"], vocabulary=["red", "blue", "navy"])
    assert s["present_kept"] == 1 and s["recall"] == 0.5 and s["precision"] == pytest.approx(1 / 3)
    assert (s["absent_in_list"], s["absent_dropped"]) == (1, 0)
    assert (s["unseen_in_list"], s["unseen_dropped"]) == (2, 1)


def test_docs_section_is_replaced(tmp_path):
    q = load()
    doc = tmp_path / "b.md"
    doc.write_text(f"# B\nbefore\n{q.DOCS_BEGIN}\nold\n{q.DOCS_END}\nafter\n")
    q.update_docs("new table\n", doc)
    assert doc.read_text() == f"# B\nbefore\n{q.DOCS_BEGIN}\nnew table\n{q.DOCS_END}\nafter\n"


def test_targets_table_checks_the_issue_figures():
    q = load()
    row = lambda v: {"nmi": [v, 0.0]}  # noqa: E731
    cl = {"shapes|color|-|kmeans": row(0.2), "shapes|color|wordnet|gradnorm": row(0.6),
          "shapes|shape|-|kmeans": row(0.7), "shapes|shape|wordnet|gradnorm": row(0.6),
          "shapes|shape|-|gradnorm, pool wordnet-all": row(0.75),
          "shapes|color|wordnet|multidproxy": row(0.3)}
    rows = {name: ok for name, _, ok in q.targets({"clustering": cl}, ["shapes"])}
    assert rows["shapes colour: GradNorm (WordNet candidates) ≥ k-means + 0.3"] is True
    assert rows["shapes shape (k-means ≥ 0.6): GradNorm (WordNet) ≥ k-means − 0.05"] is False
    assert rows["shapes shape (k-means' own aspect): GradNorm pool wordnet-all > k-means"] is True
    assert rows["shapes colour: Multi-DProxy (WordNet candidates) ≥ k-means + 0.2"] is False
    # an aspect without figures is "not measured", never "met"
    assert rows["shapes count: Multi-DProxy (LLM-style list) ≥ GradNorm (same list) − 0.05"] \
        is None


def test_targets_per_set_read_each_sets_own_conditions():
    # k-means ignores colour on one set and follows it on the other: the mean (0.58) is
    # neither, so only the per-set rows can say that GradNorm is worse where k-means follows
    q = load()

    def one(seed, km, wn):
        rows = [("color", "-", "kmeans", km), ("color", "wordnet", "gradnorm", wn)]
        return {"world": "glyphs", "seed": seed, "filter": [], "refined": [], "clustering": [
            {"aspect": a, "source": src, "method": m, "nmi": [v], "ari": [v], "acc": [v]}
            for a, src, m, v in rows]}

    sets = [one(101, 0.265, 0.838), one(102, 0.9, 0.8)]
    mean = {name: ok for name, _, ok in q.targets(q.summarise(sets), ["glyphs"])}
    assert not any("(k-means ≥ 0.6)" in name for name in mean)
    per = {name: (shown, ok) for name, shown, ok in q.per_set_targets(sets)}
    assert per["set 101: glyphs: another aspect k-means ignores (color): GradNorm (WordNet) "
               "≥ k-means + 0.3"] == ("0.838 vs 0.265", True)
    assert per["set 102: glyphs color (k-means ≥ 0.6): GradNorm (WordNet) ≥ k-means − 0.05"] \
        == ("0.800 vs 0.900", False)
    text = q.markdown(q.summarise(sets), {"date": "d", "machine": "m", "command": "c",
                                          "minutes": 1, "seeds": [101, 102], "split": "test",
                                          "n": 2, "worlds": ["glyphs"]}, sets)
    assert "| set 102: glyphs color (k-means ≥ 0.6)" in text


def test_llm_style_lists_are_not_the_values_alone():
    from mdclust.datasets import WORLDS

    q = load()
    for world, mod in WORLDS.items():
        for aspect, values in mod.VOCABULARY.items():
            lines = q.interest_file(aspect, world).read_text().splitlines()
            words = [w for w in lines if w and not w.startswith("#")]
            others = [w for w in words if w not in values]
            assert len(others) >= 5 and len(words) >= len(set(words)), (world, aspect)


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_quick_run_scores_every_method_on_every_aspect(tmp_path):
    q = load()
    from mdclust.datasets import WORLDS

    report = q.main(["--quick", "--n", "150", "--workdir", str(tmp_path)])
    cl = report["summary"]["clustering"]
    for world, mod in WORLDS.items():
        for aspect in mod.VOCABULARY:
            for method in q.INTEREST_FREE:
                nmi = cl[f"{world}|{aspect}|-|{method}"]["nmi"]
                assert 0 <= nmi[0] <= 1 and nmi[1] >= 0
            for method in q.DRIVEN:
                for source in ("vocabulary", "llm"):
                    assert 0 <= cl[f"{world}|{aspect}|{source}|{method}"]["nmi"][0] <= 1
    # the interest steers: on colour, the best language-assisted method beats k-means clearly
    best = max(cl[f"shapes|color|llm|{m}"]["nmi"][0] for m in ("zeroshot", "gradnorm", "sic"))
    assert best > cl["shapes|color|-|kmeans"]["nmi"][0] + 0.3
    words = report["summary"]["words"]
    assert words["shapes|color|gradnorm|llm"]["present"] == 6
    assert report["meta"]["split"] == "test" and report["meta"]["seeds"] == list(q.QUICK_SEEDS)


def load_k_auto():
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))  # it imports quality's set helpers
    spec = importlib.util.spec_from_file_location("k_auto", ROOT / "benchmarks" / "k_auto.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_k_hidden_summary_counts_cases_per_kind_and_correlates_scores():
    ka = load_k_auto()

    def row(kind, method, k, k_hat, nmi_hat, nmi_k, agree):
        free = {"stability": 0.9, "silhouette": 0.2, "interest_agreement": agree}
        return {"set": "shapes 101", "world": "shapes", "interest": "color", "method": method,
                "kind": kind, "k": k, "k_hat": k_hat, "how": "votes",
                "nmi_at_k_hat": nmi_hat, "nmi_at_k": nmi_k, "auto": {**free, "nmi": nmi_hat},
                "true_k": {**free, "nmi": nmi_k}}

    rows = [row("driven", "zeroshot", 6, 6, 0.9, 0.9, 0.95),
            row("driven", "gradnorm", 6, 7, 0.8, 0.85, 0.8),
            row("driven", "sic", 4, 9, 0.2, 0.3, 0.1),
            row("free", "kmeans", 5, 5, 0.1, 0.1, 0.05)]
    s = ka.summary(rows)
    assert s["kinds"]["driven"] == {"cases": 3, "exact": pytest.approx(1 / 3),
                                    "within_1": pytest.approx(2 / 3)}
    assert s["kinds"]["free"]["exact"] == 1.0
    # at k̂ for all four, at k too for the two with k̂ != k: six clusterings
    assert s["clusterings"] == 6
    assert s["spearman"]["interest_agreement"] > 0.8  # agreement ranks as NMI does here
    assert s["spearman"]["stability"] is None  # constant here: no correlation to speak of
    text = ka.markdown(rows, s, {"date": "d", "machine": "m", "command": "c", "minutes": 1,
                                 "sets": "shapes 101", "n": 200, "split": "test",
                                 "digits": "none"})
    assert "| driven | 3 | 33% | 67% | no |" in text
    assert "| gradnorm | 0% | 0.800 | 0.850 | yes |" in text
