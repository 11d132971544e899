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


@pytest.mark.slow
@pytest.mark.timeout(900)  # --quick takes about 5 minutes on 2 cores
def test_quick_run_scores_every_method_on_every_aspect(tmp_path):
    q = load()
    from mdclust.datasets import ASPECTS

    report = q.main(["--quick", "--workdir", str(tmp_path)])
    cl = report["summary"]["clustering"]
    for aspect in ASPECTS:
        for method in q.METHODS:
            nmi = cl[f"{aspect}|{method}"]["nmi"]
            assert 0 <= nmi[0] <= 1 and nmi[1] >= 0
    # the interest steers: on colour, the best language-assisted method beats k-means clearly
    best = max(cl[f"color|{m}"]["nmi"][0] for m in ("zeroshot", "gradnorm", "tac", "sic"))
    assert best > cl["color|kmeans"]["nmi"][0] + 0.3
    # and Multi-DProxy with its defaults follows it too (0.1's configuration did not)
    assert cl["color|multidproxy"]["nmi"][0] > cl["color|kmeans"]["nmi"][0] + 0.3
    words = report["summary"]["words"]
    assert words["color|gradnorm|candidate list"]["present"] == 6
    assert report["meta"]["split"] == "test" and report["meta"]["seeds"] == list(q.QUICK_SEEDS)
