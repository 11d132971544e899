"""Argument checks at the public boundary: every stage in ``mdclust/__init__.py`` is wrapped by
``checked``, which compares each argument given with the parameter's type annotation and
raises ``BadInput`` with the CLI's wording ("--k must be an integer, not '3'") instead of a
TypeError deep inside, or a silent change (3.7 -> 3, "a\\x00b" -> "a" in HDF5).

As scikit-learn's ``check_array`` does for arrays: validated once at the edge, so the stages
trust their arguments' types. Values, not just types: an integer-valued float becomes an
int (3.0 -> 3), numpy scalars become Python ones; bool is not an int; a string is not a
number; a name or text holds no control character (tab, newline and carriage return, which
the stages fold into spaces, excepted) and a path no NUL.
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
import os
import types
import typing
import unicodedata
from pathlib import PurePath

import numpy as np

from mdclust.core.errors import BadInput
from mdclust.core.store import Store, StoreLike

# whitespace the stages normalise away (validate_interest folds it into one space)
_ALLOWED_CONTROLS = frozenset("\t\n\r")


def control_character(text: str, *, path: bool = False) -> str | None:
    """The first character of ``text`` that a name (or, with ``path``, a file path) cannot
    hold, or None: NUL and lone surrogates everywhere (HDF5 strings end at NUL, surrogates do
    not encode), other control characters in names."""
    for ch in text:
        cat = unicodedata.category(ch)
        if ch == "\x00" or cat == "Cs" or (not path and cat == "Cc"
                                            and ch not in _ALLOWED_CONTROLS):
            return ch
    return None


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _members(hint) -> list:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return list(typing.get_args(hint))
    return [hint]


def _is_path_type(t) -> bool:
    return isinstance(t, type) and (issubclass(t, (PurePath, os.PathLike)) or t is os.PathLike)


def _is_stream_type(t) -> bool:
    return isinstance(t, type) and issubclass(t, typing.IO)


def _describe(hint) -> str:
    members = _members(hint)
    words: list[str] = []
    has_path = any(_is_path_type(t) for t in members)
    for t in members:
        if t is type(None) or (t is str and has_path):
            continue
        word = ("true or false" if t is bool else "an integer" if t is int
                else "a number" if t is float else "a path" if _is_path_type(t)
                else "a Store" if t is Store else "an open text file" if _is_stream_type(t)
                else "a string" if t is str
                else "a list of strings" if typing.get_origin(t) in (list, tuple)
                else f"one of {', '.join(map(repr, typing.get_args(t)))}"
                if typing.get_origin(t) is typing.Literal else f"a {getattr(t, '__name__', t)}")
        if word not in words:
            words.append(word)
    return " or ".join(words)


class _Mismatch(Exception):
    """The value is not of this member type (try the next one)."""


class _BadValue(Exception):
    """The value has the right type but cannot be taken (3.7 for an int, NUL in a name)."""


def _coerce(t, value, *, path: bool):
    """``value`` as type ``t``; _Mismatch when it is not one, _BadValue when it is but bad."""
    if t is typing.Any:
        return value
    if t is type(None):
        if value is None:
            return value
        raise _Mismatch
    if t is bool:
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        raise _Mismatch
    if t is int:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise _Mismatch
        if isinstance(value, numbers.Integral):
            return int(value)
        if math.isfinite(value) and float(value).is_integer():
            return int(value)
        raise _BadValue
    if t is float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise _Mismatch
        if math.isnan(value):
            raise _BadValue
        return float(value)
    if t is str:
        if not isinstance(value, str):
            raise _Mismatch
        if control_character(value, path=path) is not None:
            raise _BadValue(control_character(value, path=path))
        return value
    if _is_path_type(t):
        if isinstance(value, os.PathLike):
            text = os.fspath(value)
            if isinstance(text, str) and control_character(text, path=True) is not None:
                raise _BadValue(control_character(text, path=True))
            return value
        raise _Mismatch
    if _is_stream_type(t):
        if hasattr(value, "write") and not isinstance(value, (str, bytes)):
            return value
        raise _Mismatch
    origin = typing.get_origin(t)
    if origin in (list, tuple):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise _Mismatch
        args = [a for a in typing.get_args(t) if a is not Ellipsis] or [typing.Any]
        return [_coerce(args[0], v, path=path) for v in value]
    if origin is typing.Literal:
        if value in typing.get_args(t):
            return value
        raise _Mismatch
    if isinstance(t, type):
        if isinstance(value, t):
            return value
        raise _Mismatch
    return value  # an annotation this module does not know (a Protocol, a TypeVar): unchecked


def check_argument(flag: str, hint, value):
    """``value`` for a parameter annotated ``hint``, coerced (3.0 -> 3), or ``BadInput``
    naming ``flag`` as the CLI does."""
    members = _members(hint)
    path = any(_is_path_type(t) for t in members)
    for t in members:
        try:
            return _coerce(t, value, path=path)
        except _Mismatch:
            continue
        except _BadValue as exc:
            if exc.args:  # a character that the value cannot hold
                ch = exc.args[0]
                kind = ("NUL" if ch == "\x00" else "unpaired surrogate"
                        if unicodedata.category(ch) == "Cs" else "control")
                raise BadInput(f"{flag} must be {'a path' if path else 'text'} without {kind} "
                               f"characters, not {_short(value)}") from None
            raise BadInput(f"{flag} must be {_describe(t)}, not {_short(value)}") from None
    raise BadInput(f"{flag} must be {_describe(hint)}, not {_short(value)}")


def _hints(fn) -> dict:
    """Resolved annotations, also of ``from __future__ import annotations`` strings that name
    the Store, which a stage module may import only for its annotations."""
    names = {"Store": Store, "StoreLike": StoreLike, "os": os}
    try:
        return typing.get_type_hints(fn, localns=names)
    except Exception as exc:  # a typo in an annotation is a bug: found at import, not later
        raise TypeError(f"cannot resolve the annotations of {fn.__qualname__}: {exc}") from exc


def checked(fn=None, *, flags: dict[str, str] | None = None):
    """Wrap a public stage so that its arguments are checked against their annotations.

    ``flags`` names a parameter as the CLI does where that is not ``--`` plus the name with
    dashes (``interests`` -> ``--interest``, a positional ``IMAGES_DIR``, an API-only
    ``show_progress``). ``inspect.signature`` and ``__doc__`` are the stage's own."""
    if fn is None:
        return functools.partial(checked, flags=flags)
    sig = inspect.signature(fn)
    hints = _hints(fn)
    names = {name: (flags or {}).get(name, "--" + name.replace("_", "-"))
             for name in sig.parameters}
    kinds = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    plan = {name: hints[name] for name, p in sig.parameters.items()
            if hints.get(name, typing.Any) is not typing.Any and p.kind not in kinds}

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        bound = sig.bind(*args, **kwargs)  # a wrong call stays Python's TypeError
        for name, value in bound.arguments.items():
            if name in plan:
                bound.arguments[name] = check_argument(names[name], plan[name], value)
        return fn(*bound.args, **bound.kwargs)

    wrapper.flags = {name: names[name] for name in plan}  # what a message may name
    return wrapper
