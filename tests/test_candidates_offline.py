import numpy as np
import pytest
from conftest import TINY

from mdclust.core.errors import MdclustError
from mdclust.core.layout import read_candidates as load_candidates
from mdclust.core.store import Store
from mdclust.core.textcache import text_features
from mdclust.stages.candidates import candidates, read_words_file
from mdclust.stages.candidates.parse import normalise, parse_items
from mdclust.stages.candidates.wordnet import all_nouns, interest_candidates, singular
from mdclust.stages.embed import embed


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch):
    import nltk

    def refuse(*a, **k):
        raise AssertionError("nltk tried to download")

    monkeypatch.setattr(nltk, "download", refuse)


@pytest.mark.parametrize("text,items", [
    ('["a", "b"]', ["a", "b"]),
    ('{"colors": ["red", "blue"]}', ["red", "blue"]),
    ('[{"name": "red"}, {"name": "blue"}]', ["red", "blue"]),
    ("1. red\n2) blue\n3. green", ["red", "blue", "green"]),
    ("red, blue; green", ["red", "blue", " green"]),
])
def test_parse_items(text, items):
    assert [i.strip() for i in parse_items(text)] == [i.strip() for i in items]


def test_normalise_cleans_and_dedupes():
    got = normalise(['"Red"', "an Apple", "apples", "  the  dark   blue ", "red.", "x: y",
                     "a very long phrase of five words", "42"], singular)
    assert got == ["red", "apple", "dark blue", "x"]


def test_wordnet_interest_candidates():
    colors = interest_candidates("color", 25)
    assert {"red", "blue", "green", "yellow"} <= set(colors)
    fruits = interest_candidates("fruit", 60)
    assert {"apple", "banana", "orange"} <= set(fruits)
    animals = interest_candidates("animal", 80)
    assert {"dog", "bird", "insect", "puppy"} <= set(animals)
    assert len(colors) == 25 and len(set(colors)) == 25
    with pytest.raises(MdclustError, match="WordNet has no noun"):
        interest_candidates("qwertyuiop")


def test_wordnet_lists_do_not_depend_on_string_hashing():
    """nltk's order of hyponyms follows Python's string hashing; the list (order and cut) must
    not, or one seed of a benchmark gives another result in every process."""
    import os
    import subprocess
    import sys

    code = ("from mdclust.stages.candidates.wordnet import interest_candidates as c; "
            "print('|'.join(c('color')))")
    lists = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "PYTHONHASHSEED": str(s)}, check=True).stdout
             for s in (1, 2, 3)}
    assert len(lists) == 1 and "henna" in lists.pop()


def test_wordnet_all_is_the_noun_vocabulary():
    nouns = all_nouns()
    # 82,115 noun synsets in WordNet 3.0 -> 67,186 distinct first-lemma names
    assert len(nouns) == 67_186
    assert len(set(nouns)) == len(nouns)
    assert {"dog", "apple", "red"} <= set(nouns)


def test_words_file(tmp_path):
    f = tmp_path / "w.txt"
    f.write_text("# comment\nRed, Blue\ngreen\n\n")
    assert normalise(read_words_file(f)) == ["red", "blue", "green"]


def test_candidates_from_wordnet_are_stored_and_loaded(store_path):
    st = Store(store_path)
    res = candidates(st, "color", k=3, source="wordnet", encode=False)
    assert res.n_requested == 96 and not res.cached
    assert load_candidates(st, "color") == res.words
    again = candidates(st, "color", k=3, source="wordnet", encode=False)
    assert again.cached
    with pytest.raises(MdclustError, match="no candidates for interest 'shape'"):
        load_candidates(st, "shape")
    for bad in ("", "a/b", ".hidden"):
        with pytest.raises(MdclustError):
            candidates(st, bad, source="wordnet", encode=False)


def test_text_cache_encodes_each_text_once(images, store_path):
    st = Store(store_path)
    embed(images, st, model=TINY, pretrained="random", workers=0)
    words = ["red", "blue", "green", "red"]
    stats = {}
    a = text_features(st, words, stats=stats)
    assert stats["encoded"] == 3 and a.shape == (4, 64)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1, atol=1e-3)
    np.testing.assert_array_equal(a[0], a[3])
    from mdclust.core.encoders import ClipEncoder, model_spec

    enc = ClipEncoder(model_spec(TINY, "random"), device="cpu")
    b = text_features(st, ["green", "red"], stats=stats, encoder=enc)
    assert stats["encoded"] == 0 and enc.forwards == 0
    np.testing.assert_allclose(b, a[[2, 0]], atol=1e-3)
    # another template is another cache entry
    text_features(st, ["red"], template="a {} thing", stats=stats)
    assert stats["encoded"] == 1
    with pytest.raises(MdclustError, match="exactly one"):
        text_features(st, ["red"], template="no placeholder")


def test_text_cache_resumes_after_interruption(images, store_path):
    from mdclust.core.encoders import ClipEncoder, model_spec

    st = Store(store_path)
    embed(images, st, model=TINY, pretrained="random", workers=0)
    enc = ClipEncoder(model_spec(TINY, "random"), device="cpu")
    real = enc.encode_texts
    calls = {"n": 0}

    def failing(texts):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(texts)

    enc.encode_texts = failing
    words = [f"word{i}" for i in range(50)]
    with pytest.raises(KeyboardInterrupt):
        text_features(st, words, batch_size=10, encoder=enc)
    stats = {}
    out = text_features(st, words, batch_size=10, stats=stats)
    assert stats["encoded"] == 30  # the two committed batches were kept
    expected = real([f"A photo of a {w}." for w in words])
    np.testing.assert_allclose(out, expected, atol=2e-3)


def test_trimmed_text_forward_equals_open_clip():
    import torch

    from mdclust.core.encoders import ClipEncoder, model_spec

    enc = ClipEncoder(model_spec(TINY, "random"), device="cpu")
    texts = ["A photo of a dog.", "x", "a much longer caption " * 5, "red"] * 3
    ours = enc.encode_texts(texts, batch_size=5)
    with torch.inference_mode():
        ref = torch.nn.functional.normalize(enc.model.encode_text(enc.tokenize(texts)), dim=-1)
    np.testing.assert_allclose(ours, ref.numpy(), atol=1e-5)
