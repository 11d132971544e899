"""`mdclust report` and cluster names, on generated multi-aspect images (real files, real
store, real thumbnails; the page opened in headless Chromium where it is installed)."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import MDCLUST, shapes_store

import mdclust
from mdclust.datasets import read_vocabulary

INTERESTS = Path(__file__).parents[1] / "examples" / "interests" / "shapes"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """300 images of seed 5 (cluster naming was chosen on seed 0): colour and shape, each
    clustered with gradnorm at the k given (--k), colour also with kmeans at the k given to
    candidates; background's candidates without k, so its zeroshot chooses k by votes."""
    work = tmp_path_factory.mktemp("report")
    store, labels = shapes_store(work, 300, 5)
    vocab = read_vocabulary(work / "images")
    for interest in ("color", "shape"):
        k = len(vocab[interest]["present"])
        mdclust.candidates(store, interest, from_file=INTERESTS / f"{interest}.txt", k=k)
        mdclust.filter_nouns(store, interest)
        mdclust.cluster(store, interest, method="gradnorm", k=k)
    mdclust.cluster(store, "color", method="kmeans")
    mdclust.cluster(store, method="kmeans", k=4, names_from="shape")
    mdclust.candidates(store, "background", from_file=INTERESTS / "background.txt")
    mdclust.cluster(store, "background", method="zeroshot")
    return work, store, labels


def truth(labels_csv: Path, aspect: str) -> dict:
    import csv

    return {r["path"]: r[aspect] for r in csv.DictReader(open(labels_csv))}


def test_colour_clusters_are_named_by_their_colour(demo):
    _, store, labels = demo
    res = mdclust.load_clustering(store, "color", method="gradnorm")
    table = truth(labels, "color")
    right = sum(table[p] == res.names[c] for p, c in zip(res.paths, res.labels))
    assert right / len(res.paths) >= 0.9, (res.names, right)
    assert len(set(res.names)) == len(res.names)  # distinct words
    # export gains the name column, cluster --json lists the names
    rows = mdclust.export_csv(store, "color", method="gradnorm").splitlines()
    assert rows[0] == "path,cluster,name"
    assert rows[1].split(",")[2] == res.names[int(rows[1].split(",")[1])]
    done = subprocess.run([MDCLUST, "cluster", "-i", "color", "--method", "gradnorm", "--store",
                           str(store), "--json"], capture_output=True, text=True)
    assert json.loads(done.stdout)["names"] == res.names


def test_interest_free_clusterings_are_named_only_when_asked(demo):
    _, store, _ = demo
    named = mdclust.load_clustering(store, method="kmeans")
    vocab = set(mdclust.Store(store).read_group("interests/shape/candidates")["word"])
    assert len(named.names) == 4 and set(named.names) <= vocab
    plain = mdclust.cluster(store, method="kmeans", k=4)
    assert plain.names == [] and mdclust.load_clustering(store, method="kmeans").names == []
    with pytest.raises(mdclust.MissingStage, match="no candidates for interest 'mood'"):
        mdclust.cluster(store, method="kmeans", k=4, names_from="mood")
    mdclust.cluster(store, method="kmeans", k=4, names_from="shape")  # as the fixture left it


def test_report_shows_every_clustering_with_names_counts_and_thumbnails(demo):
    work, store, _ = demo
    out = work / "report"
    res = mdclust.report(store, out, thumbs=6)
    html = (out / "index.html").read_text()
    assert res.clusterings == 5 and res.missing_images == []
    sections = re.findall(r'<section id="([^"]+)" class="clustering"', html)
    assert sections == ["background-zeroshot", "color-gradnorm", "color-kmeans",
                        "shape-gradnorm", "all-kmeans"]
    for interest, method in (("color", "gradnorm"), ("shape", "gradnorm")):
        stored = mdclust.load_clustering(store, interest, method=method)
        part = html.split(f'id="{interest}-{method}"')[1].split("</section>")[0]
        cards = re.findall(r'data-cluster="(\d+)" data-name="([^"]*)" data-size="(\d+)"', part)
        assert sorted((int(c), n, int(s)) for c, n, s in cards) == sorted(
            (c, stored.names[c], stored.sizes[c]) for c in range(len(stored.sizes)))
        assert "Confusion matrix" in part and "<th>NMI</th>" in part
    thumbs = set(re.findall(r'src="(thumbs/[^"]+)"', html))
    assert thumbs and all((out / t).is_file() and (out / t).stat().st_size > 200
                          for t in thumbs)
    assert res.thumbnails_written == len(list((out / "thumbs").iterdir()))
    # each cross-tab (the three pairs of background, colour, shape) covers every image once
    tabs = html.split('id="crosstab"')[1].split('<table class="xtab">')[1:]
    assert len(tabs) == 3
    for tab in tabs:
        counts = [int(n) for n in re.findall(r"(?:>|\s)(\d+)</td>", tab.split("</table>")[0])]
        assert sum(counts) == 300
    # a second run reuses every thumbnail
    again = mdclust.report(store, out, thumbs=6)
    assert again.thumbnails_written == 0 and again.thumbnails_reused == res.thumbnails_written


def section_of(html: str, anchor: str) -> str:
    return html.split(f'<section id="{anchor}"')[1].split("</section>")[0]


def free_scores(html: str, anchor: str) -> dict[str, str]:
    """The label-free scores a clustering's card shows, as printed."""
    return dict(re.findall(r'<td data-score="(\w+)"[^>]*>([^<]*)</td>',
                           section_of(html, anchor)))


def test_cards_draw_the_k_curve_where_k_was_chosen_and_say_how_elsewhere(demo):
    from mdclust.core import layout

    work, store, _ = demo
    out = work / "kcurve"
    mdclust.report(store, out, thumbs=1)
    html = (out / "index.html").read_text()
    choice = mdclust.Store(store).attrs("interests/background/clusterings/zeroshot")[
        "params"]["k_choice"]
    assert choice["how"] == "votes" and len(choice["scores"]) >= 3
    part = section_of(html, "background-zeroshot")
    svg = re.findall(r'<svg class="kcurve" data-k="(\d+)".*?</svg>', part, re.S)
    assert [int(k) for k in svg] == [choice["k"]]
    curve = part.split('<svg class="kcurve"')[1].split("</svg>")[0]
    points = re.findall(r'<circle[^>]* data-k="(\d+)"><title>k = \d+: ([-\d.]+)</title>', curve)
    assert [(int(k), float(v)) for k, v in points] == [
        (int(k), round(v, 3)) for k, v in sorted(choice["scores"].items(), key=lambda t: int(t[0]))]
    polyline = re.search(r'<polyline points="([^"]+)"', curve).group(1).split()
    assert len(polyline) == len(choice["scores"])
    assert re.findall(r'<circle[^>]*class="chosen" data-k="(\d+)"', curve) == [str(choice["k"])]
    assert f'>k = {choice["k"]}</text>' in curve
    assert "chosen by the images&#39; votes over the interest&#39;s words" in part
    # k given (here, or to candidates; the CLI test above reclusters colour without --k):
    # the caption only
    words = {"given": "given (--k)", "stored": "given to candidates"}
    for interest, method in (("color", "gradnorm"), ("color", "kmeans"), (None, "kmeans")):
        stored = mdclust.Store(store).attrs(layout.clustering(interest, method))["params"]
        part = section_of(html, f"{interest or 'all'}-{method}")
        assert stored["k_choice"]["how"] in words and 'class="kcurve"' not in part
        assert f'k = {stored["k"]}, {words[stored["k_choice"]["how"]]}.</p>' in part


def test_k_curve_puts_the_best_score_highest_and_handles_stores_without_a_choice():
    from mdclust.stages.report_card import KCURVE_PAD, KCURVE_SIZE, k_curve

    c = k_curve({"k": 3, "how": "silhouette", "k_max": 4, "rows": 50,
                 "scores": {"4": 0.3, "2": 0.1, "3": 0.5}}, 3)
    (width, height), (left, right, top, bottom) = KCURVE_SIZE, KCURVE_PAD
    # k from the left edge to the right, the best score at the top, the worst at the bottom
    assert [(p["k"], p["x"], p["y"], p["chosen"]) for p in c["points"]] == [
        (2, left, height - bottom, False),
        (3, (left + width - right) / 2, top, True),
        (4, width - right, (top + height - bottom) / 2, False)]
    assert c["mark"]["x"] == c["points"][1]["x"] and (c["lo"], c["hi"]) == (0.1, 0.5)
    assert c["caption"].startswith("k = 3, chosen by the silhouette of k-means on the features")
    old = k_curve(None, 5)  # a clustering stored before k could be chosen
    assert old["points"] == [] and old["caption"].startswith("k = 5, how k was chosen is not")
    trained = k_curve({"k": 7, "how": "trained", "scores": {}}, 7)
    assert trained["points"] == [] and trained["caption"] == "k = 7, the trained method's own k"


def test_cards_show_the_label_free_scores_label_free_computes(demo):
    from mdclust.core import layout
    from mdclust.core.features import clustering_features, load_image_features
    from mdclust.methods.baselines import kmeans
    from mdclust.stages import label_free

    work, store, _ = demo
    out = work / "free"
    mdclust.report(store, out, thumbs=1)
    html = (out / "index.html").read_text()
    st = mdclust.Store(store)
    E = None
    for interest, method in (("background", "zeroshot"), ("color", "gradnorm"),
                             ("color", "kmeans"), ("shape", "gradnorm"), (None, "kmeans")):
        g = st.read_group(layout.clustering(interest, method))
        if E is None:
            E = load_image_features(st, g.attrs["params"]["model_key"])
            assert E.paths == list(g["path"])
        X = clustering_features(st, g)
        # 300 images: the report's stability sample is every row
        runs = None if X is None else [kmeans(X, g.attrs["params"]["k"], seed=s)
                                       for s in range(3)]
        want = label_free.scores(st, g, E.vectors, X, runs)
        shown = free_scores(html, f"{interest or 'all'}-{method}")
        for name in ("stability", "silhouette", "interest_agreement"):
            expect = "—" if want[name] is None else f"{want[name]:.3f}"
            assert shown[name] == expect, (interest, method, name, shown, want)
    assert "stability over 3 runs" in html and 'data-score="stability" title="' in html
    # None where a score does not apply: no features to rerun, no interest
    assert free_scores(html, "background-zeroshot")["stability"] == "—"
    assert free_scores(html, "all-kmeans")["interest_agreement"] == "—"
    # gradnorm follows colour, k-means on the image features mostly does not
    assert float(free_scores(html, "color-gradnorm")["interest_agreement"]) > float(
        free_scores(html, "color-kmeans")["interest_agreement"]) + 0.3


def test_past_the_threshold_every_card_score_comes_from_one_sample(demo, monkeypatch):
    """At scale (thresholds lowered here: 300 images count as many) the card reads one seeded
    sample of rows and computes stability, silhouette and agreement on it: equal to
    label_free's scores on those rows, and near the scores on every row."""
    import numpy as np

    from mdclust.core import layout
    from mdclust.core.features import clustering_features, load_image_features
    from mdclust.methods.baselines import kmeans
    from mdclust.stages import label_free, report_card

    monkeypatch.setattr(report_card, "SAMPLED_FROM", 100)
    monkeypatch.setattr(report_card, "STABILITY_ROWS", 200)
    work, store, _ = demo
    out = work / "sampled"
    mdclust.report(store, out, thumbs=1)
    html = (out / "index.html").read_text()
    st = mdclust.Store(store)
    for interest, method in (("color", "gradnorm"), ("color", "kmeans"),
                             ("background", "zeroshot")):
        g = st.read_group(layout.clustering(interest, method))
        E = load_image_features(st, g.attrs["params"]["model_key"]).vectors
        X = clustering_features(st, g)
        k = g.attrs["params"]["k"]
        size = max(200, report_card.PER_CLUSTER * k)  # at least PER_CLUSTER rows per cluster
        assert size < 300
        rows = np.sort(np.random.default_rng(0).choice(300, size, replace=False))
        own = E[rows] if X is None else X[rows]
        runs = None if X is None else [kmeans(own, k, seed=s) for s in range(3)]
        want = label_free.scores(st, g, E, X, runs, sample=(rows, E[rows], own))
        full = label_free.scores(st, g, E, X, None)
        shown = free_scores(html, f"{interest}-{method}")
        for name in ("stability", "silhouette", "interest_agreement"):
            expect = "—" if want[name] is None else f"{want[name]:.3f}"
            assert shown[name] == expect, (interest, method, name, shown, want)
        # the sample's scores are the whole's, give or take
        assert abs(want["interest_agreement"] - full["interest_agreement"]) < 0.05
        assert abs(want["silhouette"] - full["silhouette"]) < 0.05


def test_stale_or_missing_inputs_show_dashes_not_a_failure(demo, tmp_path):
    from mdclust.core import layout
    from mdclust.core.store import Store

    _, store, _ = demo
    copy = tmp_path / "s.h5"
    shutil.copy(store, copy)
    if Path(str(store) + ".data").exists():
        shutil.copytree(Path(str(store) + ".data"), Path(str(copy) + ".data"))
    st = Store(copy)
    path = layout.clustering("color", "gradnorm")
    with st.transaction() as txn:  # as if made before the images changed: one path differs
        g = txn.read_group(path)
        paths = list(g["path"])
        txn.put_group(path, {**g.data, "path": ["gone.png"] + paths[1:]}, g.attrs)
    res = mdclust.report(copy, tmp_path / "r", thumbs=1)
    html = (tmp_path / "r" / "index.html").read_text()
    assert res.clusterings == 5
    assert set(free_scores(html, "color-gradnorm").values()) == {"—"}
    assert "—" not in free_scores(html, "shape-gradnorm").values()


def test_moved_images_become_placeholders_with_a_warning(demo, tmp_path):
    work, store, _ = demo
    copy = tmp_path / "s.h5"
    shutil.copy(store, copy)
    if Path(str(store) + ".data").exists():  # a store is its entry file and data files
        shutil.copytree(Path(str(store) + ".data"), Path(str(copy) + ".data"))
    moved = tmp_path / "moved"
    shutil.copytree(work / "images", moved)
    first = sorted((moved).rglob("*.png"))[0]
    first.unlink()
    # the store's root now points at a folder missing one image
    from mdclust.core.store import Store

    st = Store(copy)
    with st.transaction() as txn:
        g = txn.read_group("images")
        txn.put_group("images", dict(g.data), {**g.attrs, "root": str(moved)})
    done = subprocess.run([MDCLUST, "report", "--out", str(tmp_path / "r"), "--thumbs", "300",
                           "--store", str(copy), "--quiet"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "images could not be read" in done.stderr and len(done.stderr.splitlines()) == 1
    html = (tmp_path / "r" / "index.html").read_text()
    assert 'id="missing-warning"' in html and 'class="ph"' in html


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(chromium() is None, reason="no chromium binary (Debian: apt-get install "
                    "chromium; .ci/run installs it)")
def test_the_page_loads_in_chromium_without_errors_and_its_images_decode(demo):
    work, store, _ = demo
    out = work / "browser"
    mdclust.report(store, out, thumbs=4)
    done = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu",
                           "--allow-file-access-from-files", "--virtual-time-budget=10000",
                           "--enable-logging=stderr", "--v=0", "--dump-dom",
                           (out / "index.html").as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    check = re.search(r'data-check="([^"]+)"', done.stdout)
    assert check, "the page's load handler did not run"
    result = json.loads(check.group(1).replace("&quot;", '"'))
    assert result["images"] > 20 and result["undecoded"] == 0 and result["errors"] == []
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line]
    assert console == [], console
    # the k curve as the browser built it: one point per k tried
    scores = mdclust.Store(store).attrs("interests/background/clusterings/zeroshot")[
        "params"]["k_choice"]["scores"]
    curves = re.findall(r'<svg class="kcurve"[^>]*>(.*?)</svg>', done.stdout, re.S)
    assert len(curves) == 1 and curves[0].count("<circle") == len(scores)


def test_report_refuses_bad_input_in_one_line(demo, tmp_path):
    _, store, _ = demo
    with pytest.raises(mdclust.BadInput,
                       match="no interest 'mood' in the store; it has background, color, shape"):
        mdclust.report(store, tmp_path / "r", interests=["mood"])
    empty = tmp_path / "e.h5"
    mdclust.Store(empty)
    with pytest.raises(mdclust.MdclustError):
        mdclust.report(empty, tmp_path / "r")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))


def test_cross_tabs_show_the_least_alike_interests_first():
    """Colour and a near-copy of it make a diagonal table; colour x shape is the one to show."""
    from mdclust.stages.report import telling_pairs

    rng = np.random.default_rng(0)
    color = rng.integers(0, 4, 200)
    shape = rng.integers(0, 3, 200)
    hue = color.copy()
    hue[:10] = (hue[:10] + 1) % 4  # 5% of the images differ
    rows = np.arange(200)
    sections = [{"interest": name, "rows": rows, "labels": labels}
                for name, labels in (("color", color), ("hue", hue), ("shape", shape))]
    sections[2]["rows"] = np.where(rows < 5, -1, rows)  # images a clustering lacks are skipped
    pairs = telling_pairs(sections)
    names = [(a["interest"], b["interest"]) for _, a, b in pairs]
    assert names[-1] == ("color", "hue") and pairs[-1][0] > 0.8
    assert {names[0], names[1]} == {("color", "shape"), ("hue", "shape")}
    assert pairs[0][0] < 0.1 and [p[0] for p in pairs] == sorted(p[0] for p in pairs)


def test_the_map_is_umap_where_installed_and_says_so(demo, tmp_path):
    """`--map auto` is UMAP with umap-learn installed (the `umap` extra), PCA otherwise; the
    page names the method under each map, and `--map umap` without it is one-line bad input."""
    import importlib.util

    work, store, _ = demo
    spec = importlib.util.find_spec("umap")
    have = spec is not None and spec.origin is not None
    res = mdclust.report(store, tmp_path / "auto", thumbs=1, map_points=200)
    page = (tmp_path / "auto" / "index.html").read_text()
    assert res.map == ("umap" if have else "pca")
    assert ("UMAP (cosine) of the image features" in page) == have
    assert ("PCA of the image features" in page) == (not have)
    pca = mdclust.report(store, tmp_path / "pca", thumbs=1, map_points=200, map="pca")
    assert pca.map == "pca"
    assert "PCA of the image features" in (tmp_path / "pca" / "index.html").read_text()
    if have:  # the two maps place the points differently
        dots = [re.findall(r'<circle cx="([\d.]+)" cy="([\d.]+)" r="2.2"',
                           (tmp_path / d / "index.html").read_text()) for d in ("auto", "pca")]
        assert len(dots[0]) == len(dots[1]) > 100 and dots[0] != dots[1]
    else:
        with pytest.raises(mdclust.BadInput, match="needs umap-learn"):
            mdclust.report(store, tmp_path / "u", map="umap")
    with pytest.raises(mdclust.BadInput, match="--map must be one of"):
        mdclust.report(store, tmp_path / "x", map="tsne")
