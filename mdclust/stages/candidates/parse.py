"""Turning an LLM's answer into a clean list of short candidate words."""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Callable, Iterable

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.S)
_ITEM = re.compile(r"^\s*(?:[-*•·]|\d+[.)]|\(\d+\)|[a-zA-Z][.)])\s+(.*\S)\s*$")
_ARTICLES = re.compile(r"^(?:a|an|the)\s+", re.I)
_JUNK = re.compile(r"[\"'`*_]+")


def _from_json(text: str) -> list[str] | None:
    for chunk in [m.group(1) for m in _FENCE.finditer(text)] + [text]:
        chunk = chunk.strip()
        start = min([i for i in (chunk.find("["), chunk.find("{")) if i >= 0], default=-1)
        if start < 0:
            continue
        try:
            obj, _ = json.JSONDecoder().raw_decode(chunk[start:])
        except ValueError:
            continue
        if isinstance(obj, dict):
            lists = [v for v in obj.values() if isinstance(v, list)]
            obj = lists[0] if lists else None
        if isinstance(obj, list):
            out = []
            for item in obj:
                if isinstance(item, str):
                    out.append(item)
                elif isinstance(item, dict):  # [{"name": "red"}, ...]
                    strings = [v for v in item.values() if isinstance(v, str)]
                    if strings:
                        out.append(strings[0])
            return out
    return None


def parse_items(text: str) -> list[str]:
    """Items from JSON (bare or fenced), else a numbered/bulleted list, else a comma list."""
    items = _from_json(text)
    if items is not None:
        return items
    lines = [m.group(1) for m in (_ITEM.match(line) for line in text.splitlines()) if m]
    if len(lines) >= 2:
        return lines
    body = [line for line in text.splitlines() if line.strip() and not line.rstrip().endswith(":")]
    joined = " ".join(body)
    if "," in joined or ";" in joined:
        return [p for p in re.split(r"[,;]", joined)]
    return [line for line in body if len(line.split()) <= 4]


MAX_CHARS = 40  # a candidate is a word or a short phrase; longer strings are prose, not values


def normalise(items: Iterable[str], singular: Callable[[str], str] | None = None,
              max_words: int = 3) -> list[str]:
    """Lower-case, trim punctuation and articles, singularise, drop long phrases and duplicates."""
    seen: set[str] = set()
    out: list[str] = []
    for raw in items:
        # control characters (NUL included: HDF5 strings cannot hold it) become spaces
        raw = "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in str(raw))
        word = _JUNK.sub("", raw).split(":")[0].split(" - ")[0].split(" (")[0]
        word = re.sub(r"\s+", " ", word).strip(" .,;:!?-").lower()
        word = _ARTICLES.sub("", word).strip()
        if not word or len(word.split()) > max_words or len(word) > MAX_CHARS or \
                not re.search(r"[a-z]", word):
            continue
        if singular is not None:
            word = singular(word)
        if word not in seen:
            seen.add(word)
            out.append(word)
    return out
