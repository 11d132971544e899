"""Each model's image preprocessing, remembered after its first load.

With it, `embed` starts its decoding processes before the model is built: importing open_clip
and building the model take seconds on one core, during which the other cores can decode and
resize the first batches (docs/benchmarks.md, `mdclust embed` against a naive loop). Only the
transforms that int8.ShortestEdge reproduces exactly (open_clip's default, "shortest" resize
to a square) are started early; any other model waits for its own transform, as before.
"""

from __future__ import annotations

import json
import os
import tempfile

from mdclust.core import int8

FORMAT = 1


def _path(spec):
    name = int8.entry_name(spec, FORMAT, "open_clip_torch")
    return int8.cache_base() / "preprocess" / f"{name}.json"


def _plain(cfg: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}


def remember(spec, cfg: dict) -> None:
    """Store ``cfg`` (a model's ``visual.preprocess_cfg``); a cache that cannot be written is
    only a slower next start."""
    path = _path(spec)
    try:
        if path.is_file() and json.loads(path.read_text()) == _plain(cfg):
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(_plain(cfg), f)
        os.replace(tmp, path)
    except (OSError, ValueError, TypeError):
        pass


def known(spec) -> tuple[dict, object] | None:
    """(the remembered config, its transform) when it is remembered and ShortestEdge
    reproduces it; else None."""
    try:
        cfg = json.loads(_path(spec).read_text())
        found = int8.shortest_edge(cfg)
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    return None if found is None else (cfg, found)


def config_of(model) -> dict:
    return _plain(dict(getattr(model.visual, "preprocess_cfg", {}) or {}))
