"""`mdclust candidates`: words for an interest from an LLM, WordNet or a file, cached per interest.

Stored under ``/interests/<interest>/candidates`` with provenance (source, model, prompts, raw
answers, time). A rerun of the same request returns the stored list without calling anything,
unless ``refresh``. Text features of the words are cached too (mdclust.textcache).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mdclust.core import layout
from mdclust.core.errors import BadInput, MdclustError, MissingDataFile
from mdclust.core.layout import validate_interest
from mdclust.core.store import StoreLike, as_store, now_iso
from mdclust.core.textcache import DEFAULT_TEMPLATE

SOURCES = ("llm", "wordnet", "wordnet-all", "file")
# Multi-DProxy starts from 2**beta * M candidates with beta = E / R = 1000 / 200 (paper defaults).
MULTIDPROXY_BETA = 1000 // 200
DEFAULT_N = 50


@dataclass
class CandidateResult:
    interest: str
    words: list[str]
    source: str
    model: str = ""
    n_requested: int | None = None
    cached: bool = False
    short_by: int = 0
    rounds: int = 0
    encoded: int = 0
    text_model_key: str = ""
    k_choice: dict | None = None  # the k the images' votes over these words give (docs/k.md)
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        d = asdict(self)
        d["count"] = len(self.words)
        d.pop("extra")
        return d


def default_n(k: int | None) -> int:
    return (2 ** MULTIDPROXY_BETA) * k if k else DEFAULT_N


def read_words_file(path: str | Path) -> list[str]:
    """The words of a words file (UTF-8, a BOM allowed). Only a regular file is opened: a FIFO
    would block until a writer comes, /dev/zero would never end."""
    p = Path(path)
    if not p.is_file():
        what = ("a directory" if p.is_dir() else "a FIFO (named pipe)" if p.is_fifo()
                else "a device" if p.is_char_device() or p.is_block_device()
                else "a socket" if p.is_socket() else None)
        if what is None:
            raise BadInput(f"words file not found: {path}")
        raise BadInput(f"words file {path} is {what}, not a regular file; give a regular text "
                       "file (one word per line or comma-separated)")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise MdclustError(f"cannot read words file {path}: {exc.strerror or exc}") from exc
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise BadInput(f"words file {path} is UTF-16 text, not UTF-8; save it as UTF-8")
    try:
        text = data.decode("utf-8-sig")  # Notepad's UTF-8 starts with a BOM: not a word
    except UnicodeDecodeError as exc:
        raise BadInput(f"words file {path} is not UTF-8 text (byte {exc.start}); save it "
                       "as UTF-8") from exc
    if "\x00" in text:
        raise BadInput(f"words file {path} is not text (it holds NUL bytes at byte "
                       f"{data.index(0)}: UTF-16 without a BOM, or a binary file?); save it "
                       "as UTF-8")
    return [w for line in text.splitlines() if not line.lstrip().startswith("#")
            for w in re.split(r"[,;\t]", line)]


def candidates(store: StoreLike, interest: str, *, k: int | None = None,
               k_max: int | None = None, n: int | None = None, llm: str | None = None,
               source: str | None = None,
               from_file: str | Path | None = None, context: str | None = None,
               refresh: bool = False, api_base: str | None = None, timeout: float = 60.0,
               retries: int = 2, rounds: int = 3, encode: bool = True, model: str | None = None,
               template: str | None = None, show_progress: bool = False) -> CandidateResult:
    """Candidate words for an interest (LLM, WordNet or a file), stored with provenance.

    Parameters
    ----------
    store : Store or path
        The mdclust store (HDF5 file).
    interest : str
        The user's interest, e.g. "color".
    k : int, optional
        Number of clusters M; sets ``n`` to 2^5 * M (Multi-DProxy's 2^(E/R) * M) and is the
        interest's k for the later stages. Default: auto, each later stage chooses k (the
        result's ``k_choice`` says what the images give now; docs/k.md).
    k_max : int, optional
        The largest k the estimate in ``k_choice`` considers.
    n : int, optional
        Number of candidates to ask for; default 2^5 * k, or 50.
    llm : str, optional
        litellm model string (gpt-4o, anthropic/..., ollama/llama3, openai/<name> with
        ``api_base``).
    source : str, optional
        wordnet (hyponyms of the interest) or wordnet-all (every noun); the default when
        neither ``llm`` nor ``from_file`` is given is wordnet.
    from_file : path, optional
        Words file: one per line or comma-separated; '#' starts a comment.
    context : str, optional
        What the images are, for the LLM prompt (e.g. "photos of fruit").
    refresh : bool
        Ask again even if the same request is stored.
    api_base : str, optional
        Base URL of an OpenAI-compatible or other provider endpoint.
    timeout : float
        Seconds to wait for each LLM answer; an answer that does not come in time is not
        retried.
    retries : int
        Retries of an LLM call that failed fast (connection refused, HTTP 5xx, rate limit).
    rounds : int
        Requests in all when the answer has too few items.
    encode : bool
        Also encode and cache the words' text features.
    model : str, optional
        Feature set (model key) whose text encoder encodes the words.
    template : str, optional
        Prompt template for the text features; default "A photo of a {}.".
    show_progress : bool
        Show progress on stderr.

    Returns
    -------
    CandidateResult
    """
    store = as_store(store)
    interest = validate_interest(interest)
    chosen = [x for x in (llm, source, from_file) if x]
    if len(chosen) > 1:
        raise BadInput("choose one of --llm, --source and --from-file")
    if source and source not in ("wordnet", "wordnet-all"):
        raise BadInput(f"unknown --source {source!r}: use wordnet or wordnet-all")
    kind = "llm" if llm else "file" if from_file else (source or "wordnet")
    if k is not None and k < 2:
        raise BadInput("--k must be at least 2")
    if n is not None and n < 1:
        raise BadInput("--n must be at least 1")
    if timeout <= 0 or retries < 0 or rounds < 1:
        raise BadInput("--timeout must be > 0, --retries >= 0, --rounds >= 1")
    n_req = None if kind == "wordnet-all" else (n or default_n(k) if kind != "file" else n)
    store.validate()
    store.check_writable()  # before the work, not at commit
    with store.snapshot() as snap:
        n_images = (snap.shape(layout.IMAGE_PATHS) or (None,))[0]
    if k is not None and n_images is not None and k > n_images:
        raise BadInput(f"--k {k} is more than the number of images ({n_images}); "
                           "k is the number of clusters")
    request = {"source": kind, "model": llm or "", "n": n_req, "context": context or "",
               "file": str(Path(from_file).resolve()) if from_file else ""}

    try:
        old = store.read_group(layout.candidates(interest))
    except MissingDataFile:
        old = None  # its data file is gone: fetch the words again and replace the group
    cached = old is not None and not refresh and old.attrs.get("request") == request
    if cached:
        result = CandidateResult(interest, list(old["word"]), kind, llm or "", n_req,
                                 cached=True, short_by=int(old.attrs.get("short_by", 0)))
    else:
        result = _fetch(kind, interest, n_req, llm, from_file, context, api_base, timeout,
                        retries, rounds)
        if not result.words:
            raise MdclustError(f"no candidates found for {interest!r} from {kind}")
    if encode and store.children("features"):
        from mdclust.core.textcache import text_features

        # Encoded before anything is committed, into the journal: a bad template or model, or
        # a missing data file, fails here and leaves the store as it was.
        stats: dict = {}
        text_features(store, result.words, template or DEFAULT_TEMPLATE, model=model,
                      show_progress=show_progress, stats=stats, commit=False)
        result.encoded, result.text_model_key = stats["encoded"], stats["model_key"]
    # One commit: the words and their text features (folded in from the journal) together.
    with store.transaction() as txn:
        if cached and old.attrs.get("k") != k:  # the same words, now for another k
            txn.put_group(layout.candidates(interest), {"word": result.words},
                          {**{a: v for a, v in old.attrs.items()
                              if a not in ("mdclust_version", "time")},
                           "k": k})
        if not cached:
            attrs = {"request": request, "source": kind, "model": llm or "", "k": k,
                     "n_requested": n_req, "n_obtained": len(result.words),
                     "short_by": result.short_by, "context": context or "",
                     "api_base": api_base or "", "rounds": result.rounds, "fetched": now_iso(),
                     **result.extra}
            txn.put_group(layout.candidates(interest), {"word": result.words}, attrs)
    if encode and store.children("features") and len(result.words) >= 2:
        # What k these words give on the images now: said, not stored (later stages choose
        # again on the images they see, unless k was given here)
        from mdclust.core.features import load_image_features
        from mdclust.stages import kchoice

        # streamed: the estimate reads a 3,000-row sample (none when k is given), so holding
        # every feature would cost 2 GB and ~15 s at 1M images only to print a line
        feats = load_image_features(store, model, stream=True)
        result.k_choice = kchoice.for_interest(
            store, interest, k, len(feats.paths), feats.vectors, feats.key,
            k_max=k_max, words=result.words, source=kind,
            template=template or DEFAULT_TEMPLATE).to_json()
    return result


def _fetch(kind, interest, n, llm, from_file, context, api_base, timeout, retries,
           rounds) -> CandidateResult:
    from mdclust.stages.candidates import wordnet
    from mdclust.stages.candidates.parse import normalise

    if kind == "llm":
        from mdclust.stages.candidates.llm import ask_llm

        ans = ask_llm(interest, n, llm, context=context, api_base=api_base, timeout=timeout,
                      retries=retries, rounds=rounds, singular=wordnet.singular)
        return CandidateResult(interest, ans.words, kind, llm, n, short_by=max(0, n - len(
            ans.words)), rounds=ans.rounds, extra={"prompts": ans.prompts, "raw_response":
                                                   ans.raw})
    if kind == "file":
        words = normalise(read_words_file(from_file))
        return CandidateResult(interest, words[:n] if n else words, kind, n_requested=n)
    if kind == "wordnet-all":
        return CandidateResult(interest, wordnet.all_nouns(), kind)
    words = wordnet.interest_candidates(interest, n)
    return CandidateResult(interest, words, kind, n_requested=n,
                           short_by=max(0, n - len(words)) if n else 0)
