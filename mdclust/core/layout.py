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


def text_features(model_key: str, template_id: str) -> str:
    return f"text_features/{model_key}/{template_id}"


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
