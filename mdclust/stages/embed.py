"""`mdclust embed`: CLIP image features for a folder, incremental and resumable.

Each batch is committed to a journal file (written to a temporary name, then renamed) as soon as
it is encoded; the store itself is rewritten once at the end, merging the journal. A run killed
at any point therefore loses at most the batch in flight, and the next run picks up the journal.

``engine="ray"`` replaces only the batch loop (stages/embed_ray.py): Ray's output blocks are
journalled the same way, so planning, resuming and the merge are shared by both engines.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mdclust.core import journal, layout
from mdclust.core.encode_runner import DecodeDataset, decoding, encode_batches
from mdclust.core.encoders import ModelSpec, model_spec
from mdclust.core.errors import MdclustError
from mdclust.core.images import FileEntry, discover, listed, max_pixels, sha256_file
from mdclust.core.labels import read_labels_csv
from mdclust.core.progress import progress_bar
from mdclust.core.store import Store, Transaction
from mdclust.stages import embed_import, embed_ray
from mdclust.stages import views as views_mod

EMPTY_REASON = "empty file"


@dataclass
class EmbedResult:
    images: int = 0  # files with a valid image in the store after the run
    embedded: int = 0  # model forwards' worth of new feature rows written in this run
    reused: int = 0  # files whose features were already stored (unchanged, duplicate, resumed)
    dropped: int = 0  # files that were stored before but are gone now
    skipped: list[tuple[str, str]] = field(default_factory=list)
    model_key: str = ""
    model_loaded: bool = False
    seconds: float = 0.0
    images_per_second: float = 0.0
    labels_aspects: list[str] = field(default_factory=list)
    labels_unknown: list[str] = field(default_factory=list)
    labels_missing: int = 0
    views_embedded: int = 0  # images whose augmented views were encoded in this run
    imported: int = 0  # feature rows imported (`--features`) instead of computed

    def to_json(self) -> dict:
        d = asdict(self)
        d["skipped"] = [{"path": p, "reason": r} for p, r in self.skipped]
        d["skipped_count"] = len(self.skipped)
        return d


# -- journal ---------------------------------------------------------------------------------
JOURNAL_KIND = "embed"


def _write_journal(store: Store, spec: ModelSpec, shas: list[str], vectors: np.ndarray,
                   failed: list[tuple[str, str]]) -> None:
    journal.write_batch(store, JOURNAL_KIND, key=np.array(spec.key),
                        attrs=np.array(json.dumps(spec.attrs())),
                        sha=np.array(shas, dtype="U64"), vectors=vectors.astype(np.float16),
                        failed_sha=np.array([s for s, _ in failed], dtype="U64"),
                        failed_reason=np.array([r for _, r in failed], dtype=object))


def _read_journal(store: Store) -> tuple[dict, dict[str, str], list[Path]]:
    """{key: (attrs, [sha], [vectors])}, {sha: reason} and the files read, from the journal."""
    feats: dict[str, tuple[dict, list[str], list[np.ndarray]]] = {}
    failed: dict[str, str] = {}
    batches = journal.read_batches(store, JOURNAL_KIND)
    for _, z in batches:
        key = str(z["key"])
        entry = feats.setdefault(key, (json.loads(str(z["attrs"])), [], []))
        entry[1].extend(str(s) for s in z["sha"])
        entry[2].append(z["vectors"])
        failed.update(zip((str(s) for s in z["failed_sha"]), (str(r) for r in z["failed_reason"])))
    return feats, failed, [p for p, _ in batches]


# -- state of the store -----------------------------------------------------------------------
@dataclass
class _Known:
    """What the store (plus a leftover journal) already says about files and contents."""

    records: dict[str, tuple[int, float, str, str]]  # path -> (size, mtime, sha, reason or "")
    feature_shas: set[str]
    bad_shas: dict[str, str]
    root: str | None


def _known_state(store: Store, key: str) -> _Known:
    records: dict[str, tuple[int, float, str, str]] = {}
    with store.snapshot() as snap:
        images = snap.read_group("images")
        skipped = snap.read_group(layout.SKIPPED)
        feats = snap.read_group(layout.features(key))
        root = images.attrs.get("root") if images else None
    if images:
        for p, s, m, h in zip(images["path"], images["size"], images["mtime"], images["sha256"]):
            records[p] = (int(s), float(m), h, "")
    bad: dict[str, str] = {}
    if skipped:
        for p, s, m, h, r in zip(skipped["path"], skipped["size"], skipped["mtime"],
                                 skipped["sha256"], skipped["reason"]):
            if r.startswith("too large"):
                continue  # depends on $MDCLUST_MAX_PIXELS, which may have been raised since
            records[p] = (int(s), float(m), h, r)
            if h:
                bad[h] = r
    feature_shas = set(feats["sha256"]) if feats else set()
    jfeats, jfailed, _ = _read_journal(store)
    if key in jfeats:
        feature_shas.update(jfeats[key][1])
    bad.update(jfailed)
    return _Known(records, feature_shas, bad, root)


# -- decoding in worker processes ---------------------------------------------------------------
def default_workers() -> int:
    # Leave a core to the model's own threads: on 2 CPUs one decoder beat two (docs/benchmarks.md).
    return min(8, max(1, (os.cpu_count() or 1) - 1))


# -- the stage --------------------------------------------------------------------------------
def embed(images_dir: str | os.PathLike | None = None,
          store: Store | str | os.PathLike | None = None, *,
          model: str = "ViT-B-32", pretrained: str | None = None, device: str = "auto",
          batch_size: int = 64, workers: int | None = None, precision: str = "auto",
          labels: str | os.PathLike | None = None, offline: bool = False,
          views: int = 0, augment: str = views_mod.DEFAULT_AUGMENT,
          engine: str = "local", address: str | None = None,
          features: str | os.PathLike | None = None, paths: str | os.PathLike | None = None,
          from_list: str | os.PathLike | None = None,
          show_progress: bool = False) -> EmbedResult:
    """Embed images with CLIP into the store (incremental and resumable; module docstring).

    Parameters
    ----------
    images_dir : path, optional
        Folder of images, searched recursively (not with ``features``).
    store : Store or path, optional
        The mdclust store; default ``$MDCLUST_STORE`` or ./mdclust.h5.
    model : str
        open_clip model name (``mdclust.models()`` lists them), e.g. ViT-B-32, mdclust-tiny.
    pretrained : str, optional
        open_clip tag, a local weights file, or "random"; default the model's bundled weights
        (mdclust-tiny), else "openai".
    device : str
        auto (CUDA, then MPS, then CPU), cpu, cuda or mps.
    batch_size : int
        Images per forward pass.
    workers : int, optional
        Decoding processes beside the model; default CPUs - 1, at most 8; 0 decodes inline.
    precision : str
        auto (fp16 on CUDA, else fp32), fp32, fp16, bf16, or int8 (CPU: the image tower
        quantised through ONNX Runtime, ``mdclust[int8]``; its features are stored under
        their own key, ``model@weights+int8``).
    labels : path, optional
        Ground-truth CSV: path, then one column per aspect.
    offline : bool
        Never download weights (as HF_HUB_OFFLINE=1 does). Otherwise weights named by an
        open_clip tag are downloaded into Hugging Face's cache when missing (docs/models.md).
    views : int
        Also store this many augmented views per image (for PIPCDR).
    augment : str
        Augmentations of the views, a comma list of crop, flip, rotate, jitter, gray, blur.
    engine : str
        local (this process, with ``workers`` decoding processes) or ray (Ray Data model
        actors: one per GPU, else one per CPU; needs ``pip install 'mdclust[ray]'``). Both
        journal and merge the same way; views are always encoded locally (docs/scale.md).
    address : str, optional
        Ray cluster to join with ``engine="ray"`` (``auto``, or the head's ``host:6379``);
        default ``$RAY_ADDRESS``, else a local Ray instance for this run. Workers must see the
        images (and a weights file) at the same paths.
    features : path, optional
        Import these image features instead of computing them: a .npy matrix (with
        ``paths``) or a clip-retrieval output folder (stages/embed_import.py), under ``model``
        and ``pretrained`` (the text side of later stages).
    paths : path, optional
        With a .npy ``features``: one image path per row (txt, CSV or Parquet with a path
        column); relative paths are resolved against this file's folder.
    from_list : path, optional
        Embed the images this file lists instead of a folder's: one path per line, or a CSV or
        Parquet file with a path column; relative paths against the list's folder. The images
        are stored under the folder they share (core/images.listed).
    show_progress : bool
        Show progress on stderr.

    Returns
    -------
    EmbedResult
    """
    t0 = time.perf_counter()
    store = store if isinstance(store, Store) else Store(store)
    if features is not None:
        return _import(store, images_dir, features, paths, model, pretrained, labels, t0)
    if (images_dir is None) == (from_list is None):
        raise MdclustError("give the images folder or --from-list FILE (or --features to "
                           "import features), one of them")
    if paths is not None:
        raise MdclustError("--paths goes with --features (a .npy matrix's rows)")
    problems: list[tuple[str, str]] = []
    if from_list is not None:
        root, entries = listed(from_list, problems)
    else:
        root = Path(images_dir).expanduser()
        if not root.is_dir():
            raise MdclustError(f"images folder not found: {images_dir}")
        root, entries = root.resolve(), None
    if batch_size < 1:
        raise MdclustError("--batch-size must be at least 1")
    workers = default_workers() if workers is None else workers
    if workers < 0:
        raise MdclustError("--workers must be 0 or more")
    if views < 0:
        raise MdclustError("--views must be 0 or more")
    embed_ray.check_engine(engine)
    augment = views_mod.parse_augment(augment) if isinstance(augment, str) else tuple(augment)
    store.validate()
    store.check_writable()  # before the work, not at commit
    spec = model_spec(model, pretrained).for_precision(precision)
    # One writer per store for the whole run: a second embed (of another folder, say) waits
    # here and then sees this run's root, instead of both passing the root check and
    # mixing their images and journals.
    with store.lock():
        known = _known_state(store, spec.key)
        if store.attrs(layout.IMAGES).get(embed_import.IMPORTED):
            raise MdclustError(f"store {store.path} holds imported features (`embed "
                               "--features`); embed image files into another --store")
        if known.root and Path(known.root) != root:
            raise MdclustError(f"store {store.path} holds images from {known.root}, not {root}; "
                               "use another --store for another collection"
                               + (" (a list's images are stored under the folder they share)"
                                  if from_list is not None else ""))
        label_table = read_labels_csv(labels, root) if labels else None

        max_pixels()  # a bad $MDCLUST_MAX_PIXELS is one error here, not a reason per file
        meta: dict[str, str] = {}  # a shard member's caption or label (KEY.txt, KEY.json)
        if entries is None:
            entries = discover(root, problems, meta)
        if not entries and not known.records:
            raise MdclustError(f"no image files found under {root}")
        plan = _plan(root, entries, known)
        result = EmbedResult(model_key=spec.key)

        todo = plan.to_embed
        view_items: list[tuple[str, Path]] = []
        if views:
            first = {}
            for path, sha in plan.shas.items():
                if path not in plan.reasons:
                    first.setdefault(sha, root / path)
            done = views_mod.stored(store, spec.key, augment, views)
            view_items = [(sha, f) for sha, f in first.items() if sha not in done]
        result.model_loaded = bool(todo or view_items)
        ray_todo, local_todo = (todo, []) if engine == "ray" else ([], todo)
        if ray_todo:
            with progress_bar(show_progress, unit="img") as bar:
                _run_ray(store, spec, root, ray_todo, bar, result, batch_size=batch_size,
                         device=device, precision=precision, offline=offline, address=address)
        if local_todo or view_items:  # views stay on this engine (docs/scale.md)
            from mdclust.core.encoders import ClipEncoder

            early = _early_decoding(spec, device, root, local_todo, batch_size, workers)
            encoder = ClipEncoder(spec, device=device, precision=precision, offline=offline,
                                  progress=show_progress)
            with progress_bar(show_progress, unit="img") as bar:
                if local_todo:
                    _run_batches(store, encoder, root, local_todo, batch_size, workers, bar,
                                 result, early)
                if view_items:
                    result.views_embedded = views_mod.run(store, encoder, view_items, augment,
                                                          views, batch_size, workers, bar)

        with store.transaction() as txn:
            merged, live = _commit(txn, store, root, entries, plan, label_table, result, meta)
            merged += views_mod.commit(txn, store, live)
        journal.clear(store, merged)
        result.skipped += problems  # reported, not stored: such names cannot go into HDF5
        result.seconds = round(time.perf_counter() - t0, 3)
        if result.embedded:
            result.images_per_second = round(result.embedded / max(result.seconds, 1e-9), 2)
        return result


def _import(store, images_dir, features, paths, model, pretrained, labels, t0) -> EmbedResult:
    if images_dir is not None:
        raise MdclustError("give either an images folder or --features, not both")
    store.validate()
    store.check_writable()
    spec = model_spec(model, pretrained)
    n, _, aspects, unknown, missing = embed_import.import_features(
        store, spec, Path(features), None if paths is None else Path(paths), labels)
    return EmbedResult(images=n, embedded=0, model_key=spec.key, imported=n,
                       labels_aspects=aspects, labels_unknown=unknown, labels_missing=missing,
                       seconds=round(time.perf_counter() - t0, 3))


@dataclass
class _Plan:
    shas: dict[str, str]  # path -> sha
    reasons: dict[str, str]  # path -> skip reason known before decoding
    to_embed: list[tuple[str, str]]  # (sha, a path with that content), unique shas
    previous_paths: set[str]


def _plan(root: Path, entries: list[FileEntry], known: _Known) -> _Plan:
    shas: dict[str, str] = {}
    reasons: dict[str, str] = {}
    wanted: dict[str, str] = {}
    for e in entries:
        prev = known.records.get(e.path)
        if prev and prev[0] == e.size and prev[1] == e.mtime:
            sha, reason = prev[2], prev[3]  # unchanged: trust the stored hash, skip reading
        elif e.size == 0:
            sha, reason = "", EMPTY_REASON
        else:
            sha, reason = sha256_file(root / e.path), ""
        reason = reason or known.bad_shas.get(sha, "")
        shas[e.path] = sha
        if reason:
            reasons[e.path] = reason
        elif sha not in known.feature_shas:
            wanted.setdefault(sha, e.path)
    return _Plan(shas, reasons, list(wanted.items()), set(known.records))


def _early_decoding(spec, device, root, todo, batch_size, workers):
    """(config, dataset, batches) already decoding when the model's preprocessing is
    remembered from an earlier load (fp32 and the floating precisions; int8 builds no torch
    model once cached); None otherwise."""
    if not todo or not workers or spec.variant:
        return None
    from mdclust.core import preprocess_cache
    from mdclust.core.encoders import resolve_device

    found = preprocess_cache.known(spec)
    if found is None:
        return None
    dataset = DecodeDataset([root / p for _, p in todo], found[1])
    return found[0], dataset, decoding(dataset, batch_size=batch_size, workers=workers,
                                       device=resolve_device(device))


def _run_batches(store, encoder, root, todo, batch_size, workers, bar, result,
                 early=None) -> None:
    def sink(idx, vecs, bad) -> None:
        shas = [todo[i][0] for i in idx]
        _write_journal(store, encoder.spec, shas, vecs if vecs is not None else np.zeros((0, 0)),
                       [(todo[i][0], reason) for i, reason in bad])
        result.embedded += len(shas)

    from mdclust.core import preprocess_cache

    # (early decoding is only started for specs whose encoder builds the torch model)
    if early is not None and preprocess_cache.config_of(encoder.model) != early[0]:
        early = None  # not the transform the model was built with: decode again with its own
    if early is not None:
        dataset, batches = early[1], early[2]
    else:
        dataset, batches = DecodeDataset([root / p for _, p in todo], encoder.preprocess), None
    encode_batches(encoder, dataset, sink, batch_size=batch_size, workers=workers, bar=bar,
                   label="embedding", batches=batches)


def _run_ray(store, spec, root, todo, bar, result, **options) -> None:
    def sink(shas, vecs, failed) -> None:
        _write_journal(store, spec, shas, vecs if vecs is not None else np.zeros((0, 0)), failed)
        result.embedded += len(shas)

    embed_ray.run(spec, [(sha, root / p) for sha, p in todo], sink, bar=bar, **options)


def _commit(txn: Transaction, store: Store, root: Path, entries: list[FileEntry], plan: _Plan,
            label_table, result: EmbedResult,
            meta: dict[str, str] | None = None) -> tuple[list[Path], set[str]]:
    """Merge the journal and rewrite images/skipped/features; returns the journal files merged
    and the content hashes of the images now in the store."""
    jfeats, jfailed, merged = _read_journal(store)
    bad = dict(jfailed)
    rows, skipped = [], []
    for e in entries:
        sha = plan.shas[e.path]
        reason = plan.reasons.get(e.path) or bad.get(sha, "")
        if reason:
            skipped.append((e, sha, reason))
        else:
            rows.append((e, sha))
    live = {sha for _, sha in rows}

    for key in sorted(set(txn.children("features")) | set(jfeats)):
        old = txn.read_group(layout.features(key))
        shas = list(old["sha256"]) if old else []
        vecs = [old["vectors"]] if old else []
        attrs = dict(old.attrs) if old else {}
        if key in jfeats:
            jattrs, jshas, jvecs = jfeats[key]
            attrs = {**jattrs, **{k: v for k, v in attrs.items() if k in ("time",)}}
            shas += jshas
            vecs += [v for v in jvecs if v.size]
        if not shas:
            continue
        keep = journal.live_rows(shas, live)
        if key not in jfeats and len(keep) == len(shas):
            continue  # nothing new, nothing dropped: the stored group stands as it is
        matrix = np.concatenate(vecs, axis=0)
        if not keep:
            txn.delete(layout.features(key))
            continue
        attrs["dim"] = int(matrix.shape[1])
        attrs.pop("time", None)
        txn.put_group(layout.features(key), {"sha256": [shas[i] for i in keep],
                                          "vectors": matrix[keep].astype(np.float16)}, attrs)

    table = {
        "path": [e.path for e, _ in rows],
        "size": np.array([e.size for e, _ in rows], dtype=np.int64),
        "mtime": np.array([e.mtime for e, _ in rows], dtype=np.float64),
        "sha256": [s for _, s in rows],
    }
    if meta:  # shard members' captions or labels, as their shards hold them
        table["meta"] = [meta.get(e.path, "") for e, _ in rows]
    txn.put_group(layout.IMAGES, table, {"root": str(root)})
    txn.put_group(layout.SKIPPED, {
        "path": [e.path for e, _, _ in skipped],
        "size": np.array([e.size for e, _, _ in skipped], dtype=np.int64),
        "mtime": np.array([e.mtime for e, _, _ in skipped], dtype=np.float64),
        "sha256": [s for _, s, _ in skipped],
        "reason": [r for _, _, r in skipped],
    })

    present = {e.path for e in entries}
    result.images = len(rows)
    result.skipped = [(e.path, r) for e, _, r in skipped]
    result.dropped = len(plan.previous_paths - present)
    result.reused = len(rows) - min(result.embedded, len(rows))

    if label_table is not None:
        valid = [e.path for e, _ in rows]
        valid_set = set(valid)
        unknown = sorted({p for col in label_table.values() for p in col} - valid_set)
        data = {"path": valid}
        for aspect, col in label_table.items():
            data[aspect] = [col.get(p, "") for p in valid]
            result.labels_missing += sum(1 for p in valid if p not in col)
        txn.put_group(layout.LABELS, data, {"aspects": list(label_table)})
        result.labels_aspects = list(label_table)
        result.labels_unknown = unknown
    return merged, live
