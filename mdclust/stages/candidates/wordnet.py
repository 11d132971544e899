"""WordNet 3.0, bundled (mdclust/data/nltk_data/corpora/wordnet.zip, built by
scripts/build_wordnet.py from Debian's packages) and read through nltk without any download."""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

from mdclust.core.errors import MdclustError

NLTK_DATA = Path(__file__).resolve().parents[2] / "data" / "nltk_data"


@functools.lru_cache(maxsize=1)
def wordnet():
    """The WordNet reader (loading takes a few seconds, so it is cached per process)."""
    import nltk

    if not (NLTK_DATA / "corpora" / "wordnet.zip").is_file():
        raise MdclustError(f"bundled WordNet missing under {NLTK_DATA}; "
                           "run scripts/build_wordnet.py or reinstall mdclust")
    # nltk only opens files under its data path; ours goes first so no download is attempted.
    if str(NLTK_DATA) not in nltk.data.path:
        nltk.data.path.insert(0, str(NLTK_DATA))
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "multilingual functions are not available"
        return WordNetCorpusReader(nltk.data.find("corpora/wordnet.zip/wordnet/"), None)


def clean(lemma: str) -> str:
    return lemma.replace("_", " ").strip().lower()


# WordNet's own detachment rules for nouns (morphy(7WN)), applied in this order.
_NOUN_SUFFIXES = (("ses", "s"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"),
                  ("men", "man"), ("ies", "y"), ("s", ""))


@functools.lru_cache(maxsize=1)
def _noun_index() -> tuple[frozenset[str], dict[str, str]]:
    """Noun lemmas and irregular plurals, read straight from the zip (fast: no full reader)."""
    import zipfile

    path = NLTK_DATA / "corpora" / "wordnet.zip"
    if not path.is_file():
        raise MdclustError(f"bundled WordNet missing: {path}; run scripts/build_wordnet.py")
    with zipfile.ZipFile(path) as z:
        lemmas = frozenset(line.split(" ", 1)[0] for line in
                           z.read("wordnet/index.noun").decode().splitlines()
                           if line and not line.startswith(" "))
        exc = dict(line.split()[:2] for line in
                   z.read("wordnet/noun.exc").decode().splitlines() if line.strip())
    return lemmas, exc


def singular(word: str) -> str:
    """Singular of a noun (the last word of a phrase) by WordNet's morphy rules, if known.

    A plural that is itself a WordNet noun ("greens", "glasses") is kept, as morphy does.
    """
    parts = word.split(" ")
    last = parts[-1]
    lemmas, exc = _noun_index()
    if last not in lemmas:
        base = exc.get(last)
        if base is None:
            base = next((last[: -len(suf)] + rep for suf, rep in _NOUN_SUFFIXES
                         if last.endswith(suf) and last[: -len(suf)] + rep in lemmas), None)
        if base:
            parts[-1] = base
    return " ".join(parts)


def _total_count(wn, name: str) -> int:
    return sum(lem.count() for lem in wn.lemmas(name, "n"))


def interest_candidates(interest: str, n: int | None = None, depth: int = 3) -> list[str]:
    """Hyponyms (to ``depth`` levels) of every noun sense of ``interest``, most frequent first.

    Ranked by how often the word is used *in that sense* (SemCor counts, WordNet's cntlist),
    then by its frequency over all its noun senses, then shallower first: "ground" is frequent
    but rarely a colour, so it sinks below "red". Multi-word lemmas keep at most two words,
    underscores become spaces. Deterministic.
    """
    wn = wordnet()
    key = interest.strip().lower().replace(" ", "_")
    senses = wn.synsets(key, "n")
    if not senses:
        raise MdclustError(f"WordNet has no noun {interest!r}; use --llm or --from-file")
    ranked = ranked_hyponyms(senses, clean(key), depth)
    return ranked[:n] if n else ranked


def ranked_hyponyms(senses, skip: str, depth: int) -> list[str]:
    """The names of the hyponyms of ``senses`` to ``depth`` levels (``skip`` left out), ranked
    as ``interest_candidates`` says."""
    wn = wordnet()
    found: dict[str, tuple[int, int, int]] = {}  # name -> (sense count, depth, order)
    frontier = list(senses)
    for level in range(1, depth + 1):
        nxt = []
        for syn in frontier:
            # sorted: nltk's order of hyponyms varies with Python's string hashing, and ties
            # below are broken by the order words were found in
            for hypo in sorted(syn.hyponyms() + syn.instance_hyponyms(), key=lambda s: s.name()):
                nxt.append(hypo)
                for lemma in hypo.lemmas():
                    name = clean(lemma.name())
                    if name == skip or len(name.split()) > 2:
                        continue
                    prev = found.get(name)
                    if prev is None or lemma.count() > prev[0]:
                        found[name] = (lemma.count(), prev[1] if prev else level,
                                       prev[2] if prev else len(found))
        frontier = nxt
    return sorted(found, key=lambda w: (-found[w][0], -_total_count(wn, w.replace(" ", "_")),
                                        found[w][1], found[w][2]))


def all_nouns() -> list[str]:
    """One name per WordNet noun synset (its first lemma), deduplicated, in WordNet order.

    Read straight from data.noun (word 1 is field 5 of each synset line): the same list as
    nltk's all_synsets("n") gives, without the seconds that loading the full reader takes.
    """
    import zipfile

    seen: dict[str, None] = {}
    with zipfile.ZipFile(NLTK_DATA / "corpora" / "wordnet.zip") as z:
        for line in z.read("wordnet/data.noun").decode().splitlines():
            if line and not line.startswith(" "):
                seen.setdefault(clean(line.split(" ", 5)[4]), None)
    return list(seen)
