"""`mdclust info`: what a store holds."""

from __future__ import annotations

from typing import Any

from mdclust.core import journal, layout
from mdclust.core.store import StoreLike, as_store


def info(store: StoreLike = None) -> dict[str, Any]:
    store = as_store(store)
    store.validate()
    with store.snapshot() as snap:
        root_attrs = snap.attrs("/")
        images = snap.shape(layout.IMAGE_PATHS)
        skipped = snap.read_group(layout.SKIPPED)
        models = []
        for key in snap.children(layout.FEATURES):
            a = snap.attrs(layout.features(key))
            models.append({"key": key, "model": a.get("model"), "pretrained": a.get("pretrained"),
                           "dim": a.get("dim"),
                           "rows": (snap.shape(layout.features(key) + "/sha256") or (0,))[0],
                           "time": a.get("time")})
        label_attrs = snap.attrs(layout.LABELS)
        interests = {}
        for name in snap.children(layout.INTERESTS):
            interests[name] = {"stages": snap.children(layout.interest(name))}
        root = snap.attrs(layout.IMAGES).get("root")
    pending = len(journal.batch_files(store))
    return {
        "store": str(store.path),
        "exists": store.exists(),
        "schema": root_attrs.get("mdclust_schema"),
        "root": root,
        "images": images[0] if images else 0,
        "skipped": len(skipped["path"]) if skipped else 0,
        "skipped_files": ([{"path": p, "reason": r} for p, r in
                           zip(skipped["path"], skipped["reason"])] if skipped else []),
        "models": [m["key"] for m in models],
        "model_details": models,
        "aspects": list(label_attrs.get("aspects", [])),
        "interests": interests,
        "pending_journal_batches": pending,
    }
