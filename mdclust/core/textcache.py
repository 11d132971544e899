"""Cached text features: each (model key, prompt template, text) is encoded once.

Layout: ``/text_features/<model key>/<template id>/{text, vectors}`` with the template in the
group's attributes (id = first 12 hex digits of its SHA-256). Encoding a large pool (all WordNet
nouns) commits batch by batch to the journal, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np

from mdclust.core import journal, layout
from mdclust.core.encoders import BUNDLED_WEIGHTS, ModelSpec, model_spec
from mdclust.core.errors import MdclustError, MissingDataFile
from mdclust.core.features import resolve_model_key
from mdclust.core.progress import progress_bar
from mdclust.core.store import Store

DEFAULT_TEMPLATE = "A photo of a {}."


def template_id(template: str) -> str:
    return hashlib.sha256(template.encode()).hexdigest()[:12]


def validate_template(template: str) -> None:
    if template.count("{}") != 1:
        raise MdclustError(f"prompt template must contain exactly one '{{}}': {template!r}")


def spec_for_key(store: Store, key: str) -> ModelSpec:
    """The model that produced the image features under ``key`` (text must come from it too;
    for int8 features, its fp32 text tower: only the image tower is quantised)."""
    attrs = store.attrs(layout.features(key))
    if not attrs:
        raise MdclustError(f"no features {key!r} in {store.path}")
    pretrained = attrs["pretrained"]
    if attrs.get("weights_sha256") and not Path(pretrained).is_file():
        bundled = BUNDLED_WEIGHTS.get(attrs["model"])  # the package may have moved since
        pretrained = str(bundled) if bundled is not None else pretrained
    spec = model_spec(attrs["model"], pretrained)
    if attrs.get("weights_sha256") and spec.weights_sha256 != attrs["weights_sha256"]:
        raise MdclustError(f"weights file {attrs['pretrained']} changed since the images were "
                           "embedded; embed again or restore the file")
    return spec


def _group(key: str, template: str) -> str:
    return layout.text_features(key, template_id(template))


def text_features(store: Store, texts: Sequence[str], template: str = DEFAULT_TEMPLATE, *,
                  model: str | None = None, device: str = "cpu", batch_size: int = 512,
                  show_progress: bool = False, encoder=None, stats: dict | None = None,
                  commit: bool = True) -> np.ndarray:
    """Unit text features (float32, aligned with ``texts``) for ``template.format(text)``.

    ``stats``, if given, receives ``encoded`` (texts newly encoded) and ``model_key``.
    New features go to the journal as append batches; ``commit`` merges them into the store
    now, else the caller's next transaction does (every commit folds them in).
    """
    validate_template(template)
    key = resolve_model_key(store, model)
    group = _group(key, template)
    kind = journal.append_kind(group)
    cached = _cached(store, group, kind)
    missing = list(dict.fromkeys(t for t in texts if t not in cached))
    if stats is not None:
        stats.update(encoded=len(missing), model_key=key)
    if missing:
        if encoder is None:
            from mdclust.core.encoders import ClipEncoder

            encoder = ClipEncoder(spec_for_key(store, key), device=device)
        attrs = {"template": template, "model_key": key}
        scale = getattr(encoder, "logit_scale", None)
        if scale is not None:  # kept for stages that need the model's temperature (Eq. 9)
            attrs["logit_scale"] = scale
        with progress_bar(show_progress, unit="texts") as bar:
            task = bar.add_task("encoding texts", total=len(missing))
            for i in range(0, len(missing), batch_size):
                chunk = missing[i:i + batch_size]
                # float16 as stored, so a result never depends on whether it came from the cache
                vecs = encoder.encode_texts([template.format(t) for t in chunk]).astype(np.float16)
                journal.append(store, group, "text", attrs,
                               text=np.array(chunk, dtype=object), vectors=vecs)
                cached.update(zip(chunk, vecs))
                bar.advance(task, len(chunk))
    if commit and journal.batch_files(store, kind):  # new, or left by a killed merge
        with store.transaction():
            pass  # the commit folds the pending batches in
    return np.stack([np.asarray(cached[t], dtype=np.float32) for t in texts]) if len(texts) \
        else np.zeros((0, 0), dtype=np.float32)


def logit_scale(store: Store, model: str | None = None) -> tuple[float | None, str]:
    """(exp of the logit scale of the model behind the features ``model`` (a key; None: the
    store's only one), where it came from): as recorded when its text was encoded (callers
    encode their words first, which commits the record), else read from the model itself
    (stores whose text cache predates the record; seconds, for loading it), never downloaded;
    None, with the reason, when the model cannot be loaded (a text cache imported or built
    without its weights)."""
    key = resolve_model_key(store, model)
    root = layout.text_features(key)
    for tid in store.children(root):
        scale = store.attrs(f"{root}/{tid}").get("logit_scale")
        if scale is not None:
            return float(scale), "recorded"
    from mdclust.core.encoders import ClipEncoder

    try:
        scale = ClipEncoder(spec_for_key(store, key), device="cpu", offline=True,
                            progress=False).logit_scale
    except MdclustError as e:
        return None, str(e).splitlines()[0]
    return scale, "the model" if scale is not None else "the model has no logit scale"


def _cached(store: Store, group: str, kind: str) -> dict[str, np.ndarray]:
    try:
        g = store.read_group(group)
    except MissingDataFile:
        g = None  # its data file is gone: a cache, so it is encoded again and replaced
    out = dict(zip(g["text"], g["vectors"])) if g else {}
    for _, batch in journal.read_batches(store, kind):
        out.update(zip((str(t) for t in batch["text"]), batch["vectors"]))
    return out
