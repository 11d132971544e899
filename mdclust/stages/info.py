"""`mdclust info`: what a store holds."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from mdclust.core import journal, layout
from mdclust.core.store import StoreLike, as_store


@dataclass
class InfoResult:
    """What a store holds: images, feature sets (``model_details``), ground-truth aspects,
    and per interest the stages that have run (``interests[name]["stages"]``)."""

    store: str
    exists: bool
    schema: int | None = None
    root: str | None = None
    images: int = 0
    skipped: int = 0
    skipped_files: list[dict] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    model_details: list[dict] = field(default_factory=list)
    aspects: list[str] = field(default_factory=list)
    interests: dict[str, dict] = field(default_factory=dict)
    pending_journal_batches: int = 0

    def to_json(self) -> dict:
        return asdict(self)


def info(store: StoreLike = None) -> InfoResult:
    """Summarise what a store holds (reads attributes and shapes only: fast on any size).

    Parameters
    ----------
    store : Store or path, optional
        The mdclust store; default ``$MDCLUST_STORE`` or ./mdclust.h5.

    Returns
    -------
    InfoResult
    """
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
                           "precision": "int8" if a.get("variant") == "int8" else "float",
                           "dim": a.get("dim"),
                           "rows": (snap.shape(layout.features(key) + "/sha256") or (0,))[0],
                           "time": a.get("time")})
        label_attrs = snap.attrs(layout.LABELS)
        interests = {}
        for name in snap.children(layout.INTERESTS):
            interests[name] = {"stages": snap.children(layout.interest(name))}
        root = snap.attrs(layout.IMAGES).get("root")
    pending = len(journal.batch_files(store))
    return InfoResult(
        store=str(store.path), exists=store.exists(), schema=root_attrs.get("mdclust_schema"),
        root=root, images=images[0] if images else 0,
        skipped=len(skipped["path"]) if skipped else 0,
        skipped_files=([{"path": p, "reason": r} for p, r in
                        zip(skipped["path"], skipped["reason"])] if skipped else []),
        models=[m["key"] for m in models], model_details=models,
        aspects=list(label_attrs.get("aspects", [])), interests=interests,
        pending_journal_batches=pending)


def models() -> dict[str, list]:
    """The open_clip model names ``--model`` accepts (bundled configs included) and the
    (model, pretrained tag) pairs open_clip knows. Imports open_clip (a few seconds)."""
    from mdclust.core.encoders import register_configs

    register_configs()
    import open_clip

    return {"models": open_clip.list_models(),
            "pretrained": [list(p) for p in open_clip.list_pretrained()]}
