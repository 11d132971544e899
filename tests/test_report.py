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
from conftest import MDCLUST

import mdclust
from mdclust.datasets import generate_shapes, read_vocabulary

INTERESTS = Path(__file__).parents[1] / "examples" / "interests" / "shapes"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """300 images of seed 5 (cluster naming was chosen on seed 0): colour and shape, each
    clustered with gradnorm, colour also with kmeans."""
    work = tmp_path_factory.mktemp("report")
    labels = generate_shapes(work / "images", n=300, seed=5)
    store = work / "s.h5"
    mdclust.embed(work / "images", store, model="mdclust-tiny", labels=labels, workers=0)
    vocab = read_vocabulary(work / "images")
    for interest in ("color", "shape"):
        k = len(vocab[interest]["present"])
        mdclust.candidates(store, interest, from_file=INTERESTS / f"{interest}.txt", k=k)
        mdclust.filter_nouns(store, interest)
        mdclust.cluster(store, interest, method="gradnorm", k=k)
    mdclust.cluster(store, "color", method="kmeans")
    mdclust.cluster(store, method="kmeans", k=4, names_from="shape")
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
    assert res.clusterings == 4 and res.missing_images == []
    sections = re.findall(r'<section id="([^"]+)" class="clustering"', html)
    assert sections == ["color-gradnorm", "color-kmeans", "shape-gradnorm", "all-kmeans"]
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
    # the cross-tab of colour x shape covers every image once
    tab = html.split('id="crosstab"')[1]
    counts = [int(n) for n in re.findall(r"(?:>|\s)(\d+)</td>", tab)]
    assert sum(counts) == 300
    # a second run reuses every thumbnail
    again = mdclust.report(store, out, thumbs=6)
    assert again.thumbnails_written == 0 and again.thumbnails_reused == res.thumbnails_written


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


def test_report_refuses_bad_input_in_one_line(demo, tmp_path):
    _, store, _ = demo
    with pytest.raises(mdclust.BadInput, match="no interest 'mood' in the store; it has color"):
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
