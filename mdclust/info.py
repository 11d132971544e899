"""`mdclust info`: what a store holds."""

from __future__ import annotations

from typing import Any

from . import journal
from .store import StoreLike, as_store


def info(store: StoreLike = None) -> dict[str, Any]:
    store = as_store(store)
    store.validate()
    with store.snapshot() as snap:
        root_attrs = snap.attrs("/")
        images = snap.shape("images/path")
        skipped = snap.read_group("skipped")
        models = []
        for key in snap.children("features"):
            a = snap.attrs(f"features/{key}")
            models.append({"key": key, "model": a.get("model"), "pretrained": a.get("pretrained"),
                           "dim": a.get("dim"), "rows": (snap.shape(f"features/{key}/sha256")
                                                         or (0,))[0],
                           "time": a.get("time")})
        label_attrs = snap.attrs("labels")
        interests = {}
        for name in snap.children("interests"):
            interests[name] = {"stages": snap.children(f"interests/{name}")}
        root = snap.attrs("images").get("root")
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
