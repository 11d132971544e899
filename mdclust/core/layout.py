"""Where each stage's data lives in the store: every group path is formatted here and nowhere
else, so a stage reads another stage's output without knowing how its path is spelled.
docs/store.md describes what each group holds.

    images                                  embed: the image table (path, sha256, size, mtime)
    skipped                                 embed: files that could not be decoded, and why
    labels                                  embed --labels: ground truth per aspect
    features/{model_key}                    embed: features by content hash
    views/{model_key}/{augment set}         embed --views: augmented views
    text_features/{model_key}/{template}    text features cache
    interests/{i}/candidates                candidates
    interests/{i}/filter/{score}            filter
    interests/{i}/train/{method}            train (train/{method} without an interest)
    interests/{i}/clusterings/{method}      cluster (clusterings/{method} without an interest)
"""

from __future__ import annotations

import numpy as np

from mdclust.core.checks import control_character
from mdclust.core.errors import BadInput, MissingStage
from mdclust.core.store import check_finite

IMAGES = "images"
IMAGE_PATHS = "images/path"
SKIPPED = "skipped"
LABELS = "labels"
FEATURES = "features"
VIEWS = "views"
INTERESTS = "interests"


def features(model_key: str) -> str:
    return f"{FEATURES}/{model_key}"


def views(model_key: str, set_name: str | None = None) -> str:
    return f"{VIEWS}/{model_key}" + (f"/{set_name}" if set_name else "")


def text_features(model_key: str, template_id: str | None = None) -> str:
    """A model's cached text features under one template, or (no template) all of them."""
    root = f"text_features/{model_key}"
    return f"{root}/{template_id}" if template_id is not None else root


def interest(name: str) -> str:
    return f"{INTERESTS}/{name}"


def candidates(interest_name: str) -> str:
    return f"{INTERESTS}/{interest_name}/candidates"


def filtered(interest_name: str, score: str) -> str:
    return f"{INTERESTS}/{interest_name}/filter/{score}"


def trained(interest_name: str | None, method: str) -> str:
    return f"{INTERESTS}/{interest_name}/train/{method}" if interest_name else f"train/{method}"


def clustering(interest_name: str | None, method: str) -> str:
    return (f"{INTERESTS}/{interest_name}/clusterings/{method}" if interest_name
            else f"clusterings/{method}")


# Typed readers: a stage that needs another stage's output reads it through these, which also
# say in one line which command to run when it is missing.

def validate_interest(name: str | None) -> str:
    """The interest's name as stored (runs of whitespace folded into one space), or BadInput:
    a group name cannot hold '/' (a path separator), NUL (HDF5 ends the name there) or a
    leading '.'; other control characters would not survive a terminal or a CSV either."""
    if name is not None and not isinstance(name, str):
        raise BadInput(f"--interest must be a string, not {name!r}")
    clean = " ".join((name or "").split())
    if not clean:
        raise BadInput("--interest is required for this command")
    if ("/" in clean or clean.startswith(".") or len(clean) > 100
            or control_character(clean) is not None):
        raise BadInput(f"invalid interest name {name!r}: no '/', no control characters, no "
                       "leading '.', at most 100 characters")
    return clean


def read_candidates(store, interest_name: str) -> list[str]:
    """The stored candidate words of an interest."""
    interest_name = validate_interest(interest_name)
    g = store.read_group(candidates(interest_name))
    if g is None or not g["word"]:
        known = store.children(INTERESTS)
        raise MissingStage(f"no candidates for interest {interest_name!r}; run `mdclust "
                           f"candidates --interest {interest_name}` first"
                           + (f" (interests in the store: {', '.join(known)})" if known else ""))
    return list(g["word"])


def candidates_k(store, interest_name: str | None) -> int | None:
    return store.attrs(candidates(interest_name)).get("k") if interest_name else None


def candidates_source(store, interest_name: str | None) -> str | None:
    """Where an interest's candidates came from (llm, file, wordnet); None without any."""
    return store.attrs(candidates(interest_name)).get("source") if interest_name else None


def filtered_source(store, interest_name: str, score: str) -> str | None:
    """Where a stored filter's nouns came from: its recorded source, else (filters stored
    before it was recorded, or none) wordnet-all for that pool or the candidates' source."""
    params = store.attrs(filtered(interest_name, score)).get("params", {})
    return params.get("source") or ("wordnet-all" if params.get("pool") == "wordnet-all" else
                                    candidates_source(store, interest_name))


def read_filtered(store, interest_name: str, score: str):
    g = store.read_group(filtered(interest_name, score))
    if g is None or not g["noun"]:
        raise MissingStage(f"no filtered nouns for {interest_name!r}; run `mdclust filter "
                           f"--interest {interest_name} --method {score}` first")
    return g


def read_trained(store, interest_name: str | None, method: str) -> tuple[list[str], np.ndarray]:
    """(image paths, learned features) of a trained method."""
    g = store.read_group(trained(interest_name, method))
    if g is None:
        where = f" for {interest_name!r}" if interest_name else ""
        flag = f" --interest {interest_name}" if interest_name else ""
        raise MissingStage(f"no trained {method}{where}; run `mdclust train{flag} "
                           f"--method {method}` first")
    values = np.asarray(g["fused" if "fused" in g.data else "features"], dtype=np.float32)
    return list(g["path"]), check_finite(values, f"trained {method} features", str(store.path))


# What a clustering's readers need when they do not recluster: not its features (1 GB of text
# counterparts for GradNorm at 1M images).
CLUSTERING_LABELS = ("path", "label", "cluster_name", "name_share")


def read_clustering(store, interest_name: str | None, method: str,
                    only: tuple[str, ...] | None = None):
    g = store.read_group(clustering(interest_name, method), only)
    if g is None:
        where = f"interest {interest_name!r}" if interest_name else "the store (no interest)"
        raise MissingStage(f"no {method} clustering for {where}; run `mdclust cluster"
                           + (f" --interest {interest_name}" if interest_name else "")
                           + f" --method {method}` first")
    return g

