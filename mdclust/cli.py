"""The `mdclust` command line: a thin layer over the stage functions.

Conventions: every command takes --store; --json prints exactly one JSON object on stdout;
--quiet silences progress; exit 0 = done, 1 = a quality gate failed, 2 = bad input or a failed
dependency, always with a one-line message on stderr. Heavy libraries are imported inside the
commands so that `mdclust --help` and `mdclust info` answer quickly.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer

import mdclust
from mdclust import __version__, methods
from mdclust.methods.multidproxy import config_for

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Multiple clustering of image collections by user interest, "
                       "on frozen CLIP features.")

StoreOpt = typer.Option(None, "--store", envvar="MDCLUST_STORE",
                        help="HDF5 store [default: ./mdclust.h5, or $MDCLUST_STORE]")
JsonOpt = typer.Option(False, "--json", help="Print one JSON object on stdout and nothing else.")
QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress output.")


def _fail(message: str, code: int) -> None:
    typer.echo(f"mdclust: error: {' '.join(str(message).split())}", err=True)
    raise typer.Exit(code)


def _command(fn):
    """Turn library errors into a one-line message and the documented exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import logging

        # open_clip logs through the root logger; without a handler Python would print its
        # warnings to stderr and break the one-line-error promise.
        if not logging.getLogger().handlers:
            logging.getLogger().addHandler(logging.NullHandler())
        try:
            methods.configure_threads(strict=True)  # MDCLUST_THREADS, before torch loads
            result = fn(*args, **kwargs)
            sys.stdout.flush()  # a reader gone early shows here, not at interpreter exit
            return result
        except BrokenPipeError:
            # `mdclust export | head`: the reader has what it wanted, which is not an error
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(0) from None
        except mdclust.MdclustError as exc:
            _fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted; rerun the same command to resume", 130)
        except (typer.Exit, typer.Abort):
            raise
        except Exception as exc:  # a bug: exit 2, not Python's 1 (which means a failed gate)
            if os.environ.get("MDCLUST_DEBUG"):
                raise
            where = exc.__traceback__
            while where.tb_next is not None:
                where = where.tb_next
            _fail(f"internal error {type(exc).__name__}: {exc} (at "
                  f"{Path(where.tb_frame.f_code.co_filename).name}:{where.tb_lineno}); please "
                  "report it, with the traceback MDCLUST_DEBUG=1 prints", 2)

    return wrapper


def _store(path: Optional[Path]):
    return mdclust.Store(path)


def _emit_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, default=str) + "\n")


def _methods(given: list[str], known=None) -> list[str]:
    """--method values, repeatable and comma-separated, in order, each once; ``known`` (a
    name -> None that raises BadInput) checks every name before the first one runs."""
    out: list[str] = []
    for value in given:
        for name in value.split(","):
            name = name.strip()
            if not name:
                raise mdclust.BadInput(f"--method has an empty name in {value!r}")
            if name not in out:
                out.append(name)
    for name in out if known else ():
        known(name)
    return out


def _reading_once(names: list[str]):
    """The names, each run while the image features read by the first stay in memory for the
    next (mdclust.shared_features: one read of 2 GB at 1M images, not one per method)."""
    with mdclust.shared_features():
        yield from names


def _emit_results(objs: list[dict]) -> None:
    """One method: its object, as always; several: ``{"results": [...]}``, in the order given."""
    _emit_json(objs[0] if len(objs) == 1 else {"results": objs})


KMaxOpt = typer.Option(None, "--k-max", help="The largest k --k auto considers [default: "
                                             "20, at most the candidates and images / 5].")


def _k(value: str) -> int | None:
    from mdclust.methods.kselect import parse_k

    return parse_k(value)


def _say_k(choice: dict | None, quiet: bool) -> None:
    """The k that --k auto chose, on stderr (a given k is not news)."""
    if choice and choice["how"] not in ("given", "stored", "trained") and not quiet:
        from mdclust.methods.kselect import KChoice

        c = KChoice(choice["k"], choice["how"], choice["k_max"],
                    {int(a): b for a, b in choice["scores"].items()}, choice["rows"])
        typer.echo(f"mdclust: {c.says()}", err=True)


def _console():
    from rich.console import Console

    return Console(stderr=False, highlight=False)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mdclust {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Show the version and exit.")) -> None:
    pass


@app.command()
@_command
def embed(
    images_dir: Optional[Path] = typer.Argument(None, help="Folder of images (searched "
                                                "recursively); not with --features."),
    model: str = typer.Option("ViT-B-32", help="open_clip model name (see `mdclust models`)."),
    pretrained: Optional[str] = typer.Option(
        None, help="open_clip tag, a local weights file, or 'random' [default: the model's "
                   "bundled weights (mdclust-tiny), else 'openai']."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or mps."),
    precision: str = typer.Option("auto", help="auto (fp16 on CUDA, else fp32), fp32, fp16, "
                                               "bf16 or int8 (CPU, ONNX Runtime; features "
                                               "stored under their own key)."),
    batch_size: int = typer.Option(64, help="Images per forward pass."),
    workers: Optional[int] = typer.Option(
        None, help="Decoding processes running beside the model [default: CPUs - 1, at most "
                   "8]; 0 decodes inline."),
    labels: Optional[Path] = typer.Option(None, help="CSV: path, then one column per aspect."),
    offline: bool = typer.Option(
        False, "--offline", help="Never download weights (as HF_HUB_OFFLINE=1 does): use the "
                                 "Hugging Face cache, a --pretrained file or bundled weights."),
    allow_download: bool = typer.Option(False, "--allow-download", hidden=True,
                                        help="Accepted for old scripts: downloads are the "
                                             "default now."),
    views: int = typer.Option(0, help="Also store V augmented views per image (for `train "
                                      "--method pipcdr`)."),
    augment: str = typer.Option("crop,flip", help="Augmentations of the views, a comma list of "
                                                  "crop, flip, rotate, jitter, gray, blur "
                                                  "(jitter and gray destroy colour)."),
    engine: str = typer.Option("local", help="local, or ray: Ray Data model actors, one per "
                                             "GPU or CPU (pip install 'mdclust[ray]')."),
    address: Optional[str] = typer.Option(
        None, help="Ray cluster to join with --engine ray, e.g. auto [default: $RAY_ADDRESS, "
                   "else a local Ray instance]."),
    features: Optional[Path] = typer.Option(None, "--features", help="Import features instead "
                                            "of computing them: a .npy (with --paths) or a "
                                            "clip-retrieval output folder, under --model."),
    paths: Optional[Path] = typer.Option(None, "--paths", help="With a .npy --features: one "
                                         "image path per row (txt, CSV or Parquet)."),
    from_list: Optional[Path] = typer.Option(None, "--from-list", help="Embed the images this "
                                             "file lists (txt, or CSV/Parquet with a path "
                                             "column) instead of a folder's."),
    store: Optional[Path] = StoreOpt, as_json: bool = JsonOpt, quiet: bool = QuietOpt,
) -> None:
    """Embed images with CLIP into the store (incremental and resumable), or import features
    computed elsewhere (--features)."""
    st = _store(store)
    res = mdclust.embed(images_dir, st, model=model, pretrained=pretrained, device=device,
                        batch_size=batch_size, workers=workers, precision=precision,
                        labels=labels, offline=offline, views=views, augment=augment,
                        engine=engine, address=address, features=features, paths=paths,
                        from_list=from_list, show_progress=not (quiet or as_json))
    if res.labels_unknown:
        typer.echo(f"mdclust: warning: {len(res.labels_unknown)} label rows name no stored image "
                   f"(e.g. {res.labels_unknown[0]})", err=True)
    if as_json:
        _emit_json({"store": str(st.path), **res.to_json()})
        return
    if quiet:
        return
    out = _console()
    if res.imported:
        out.print(f"[bold]{res.imported}[/] image features imported into {st.path} "
                  f"({res.model_key}) in {res.seconds:.1f} s")
        return
    out.print(f"[bold]{res.images}[/] images in {st.path} ({res.model_key}): "
              f"{res.embedded} embedded, {res.reused} reused, {res.dropped} dropped, "
              f"{len(res.skipped)} skipped in {res.seconds:.1f} s"
              + (f" ({res.images_per_second:.1f} img/s)" if res.embedded else ""))
    for path, reason in res.skipped[:20]:
        out.print(f"  skipped {path}: {reason}", markup=False)
    if len(res.skipped) > 20:
        out.print(f"  ... and {len(res.skipped) - 20} more (see `mdclust info`)")
    if res.views_embedded:
        out.print(f"{views} augmented views ({augment}) encoded for {res.views_embedded} images")
    if res.labels_aspects:
        out.print(f"labels stored for aspects: {', '.join(res.labels_aspects)}")


@app.command()
@_command
def info(store: Optional[Path] = StoreOpt, as_json: bool = JsonOpt,
         quiet: bool = QuietOpt) -> None:
    """Summarise what a store holds."""
    st = _store(store)
    if not st.exists():
        _fail(f"no store at {st.path}; run `mdclust embed IMAGES_DIR` first", 2)
    data = mdclust.info(st).to_json()
    if as_json:
        _emit_json(data)
        return
    from rich.table import Table

    out = _console()
    out.print(f"[bold]{data['store']}[/]  schema {data['schema']}  root {data['root']}")
    out.print(f"images: {data['images']}   skipped: {data['skipped']}   "
              f"aspects: {', '.join(data['aspects']) or '-'}")
    if data["pending_journal_batches"]:
        out.print(f"pending: {data['pending_journal_batches']} journal batches from an "
                  "interrupted run (rerun `mdclust embed` to merge them)")
    table = Table("model key", "model", "pretrained", "precision", "dim", "rows", "time",
                  title="features")
    table.columns[0].overflow = "fold"  # the key is what --model takes: shown whole
    for m in data["model_details"]:
        table.add_row(m["key"], str(m["model"]), str(m["pretrained"]), m.get("precision", ""),
                      str(m["dim"]), str(m["rows"]), str(m["time"]))
    out.print(table)
    if data["interests"]:
        t2 = Table("interest", "stages", title="interests")
        for name, v in data["interests"].items():
            t2.add_row(name, ", ".join(v["stages"]))
        out.print(t2)


@app.command()
@_command
def candidates(
    interest: Optional[str] = typer.Option(None, "--interest", "-i",
                                           help="The user's interest, e.g. color."),
    k: str = typer.Option("auto", help="Number of clusters M, or auto (each later stage "
                                      "chooses; what the images give now is said). A number "
                                      "sets --n to 2^5 * M (Multi-DProxy's 2^(E/R) * M)."),
    k_max: Optional[int] = KMaxOpt,
    n: Optional[int] = typer.Option(None, help="Number of candidates to ask for [default: "
                                               "2^5 * k, or 50]."),
    llm: Optional[str] = typer.Option(None, help="litellm model string: gpt-4o, "
                                                 "anthropic/..., ollama/llama3, openai/<name> "
                                                 "with --api-base."),
    source: Optional[str] = typer.Option(None, help="wordnet (hyponyms of the interest) or "
                                                    "wordnet-all (every noun) [default: "
                                                    "wordnet when no --llm/--from-file]."),
    from_file: Optional[Path] = typer.Option(None, help="Words file: one per line or "
                                                        "comma-separated; '#' starts a comment."),
    context: Optional[str] = typer.Option(None, help="What the images are, for the prompt, "
                                                     "e.g. 'photos of fruit'."),
    refresh: bool = typer.Option(False, help="Ask again even if the same request is stored."),
    api_base: Optional[str] = typer.Option(None, help="Base URL of an OpenAI-compatible or "
                                                      "other provider endpoint."),
    timeout: float = typer.Option(60.0, help="Seconds to wait for each LLM answer; an answer "
                                             "that does not come in time is not retried."),
    retries: int = typer.Option(2, help="Retries of an LLM call that failed fast (connection "
                                        "refused or dropped, HTTP 5xx, rate limit), after 1, "
                                        "2, 4 ... s (at most 8). Longest wait per request: "
                                        "timeout + retries x (8 s + a failing answer)."),
    rounds: int = typer.Option(3, help="Requests in all when the answer has too few items."),
    encode: bool = typer.Option(True, help="Also encode and cache the words' text features."),
    model: Optional[str] = typer.Option(None, help="Feature model key, when the store has "
                                                   "several."),
    template: Optional[str] = typer.Option(None, help="Prompt template for the text features "
                                                      "[default: 'A photo of a {}.']."),
    store: Optional[Path] = StoreOpt, as_json: bool = JsonOpt, quiet: bool = QuietOpt,
) -> None:
    """Candidate words for an interest (LLM, WordNet or a file), stored with provenance."""
    st = _store(store)
    res = mdclust.candidates(st, interest, k=_k(k), k_max=k_max, n=n, llm=llm, source=source,
                             from_file=from_file, context=context, refresh=refresh,
                             api_base=api_base, timeout=timeout, retries=retries, rounds=rounds,
                             encode=encode, model=model, template=template,
                             show_progress=not (quiet or as_json))
    if res.short_by:
        typer.echo(f"mdclust: warning: asked for {res.n_requested} candidates, got "
                   f"{len(res.words)}; keeping those", err=True)
    if as_json:
        _emit_json(res.to_json())
    elif not quiet:
        shown = ", ".join(res.words[:60]) + (" ..." if len(res.words) > 60 else "")
        how = "stored list (same request; --refresh to ask again)" if res.cached else res.source
        typer.echo(f"{len(res.words)} candidates for {res.interest!r} from {how}"
                   + (f" [{res.model}]" if res.model else "") + f": {shown}")
        if res.encoded:
            typer.echo(f"encoded {res.encoded} new text features with {res.text_model_key}")
    _say_k(res.k_choice, quiet)


InterestOpt = typer.Option(None, "--interest", "-i", help="The user's interest (optional for "
                                                           "interest-free methods: kmeans).")
ModelKeyOpt = typer.Option(None, "--model", help="Feature model key, when the store has several.")
BackendOpt = typer.Option("auto", help="k-means: auto (faiss from 20,000 images, else "
                                       "scikit-learn), sklearn or faiss.")


@app.command("filter")
@_command
def filter_cmd(
    interest: Optional[str] = typer.Option(None, "--interest", "-i", help="The user's interest."),
    method: list[str] = typer.Option(["gradnorm"], metavar="<names>",
                                     help="gradnorm, msp (TAC) or cosine (SIC); repeat (or "
                                     "comma-separate) for several in one run."),
    pool: str = typer.Option("candidates", help="candidates (the interest's) or wordnet-all."),
    k: str = typer.Option("auto", help="Clusters wanted K, sets C = N/600 or 3K; auto: the "
                                      "candidates' --k, else chosen (docs/k.md)."),
    k_max: Optional[int] = KMaxOpt,
    clusters: Optional[int] = typer.Option(None, help="Pseudo-classes C, overriding the rule."),
    beta: int = typer.Option(5, help="Nouns kept per pseudo-class."),
    tau: float = typer.Option(12.5, help="Classifier temperature (1/0.08)."),
    epochs: int = typer.Option(30, help="Classifier epochs (Adam)."),
    lr: float = typer.Option(1e-3, help="Classifier learning rate."),
    batch: int = typer.Option(2048, help="Classifier batch size."),
    min_steps: int = typer.Option(1000, help="At least this many optimiser steps (small sets)."),
    seed: int = typer.Option(0, help="Seed of the pseudo-label k-means and the classifier."),
    template: str = typer.Option("A photo of a {}.", help="Text prompt for the nouns."),
    sample: str = typer.Option("60000", help="Above this many images, score the nouns on a "
                               "seeded sample of them (at most N/300 pseudo-classes), so the "
                               "filter grows linearly; 'all' for the paper as written."),
    model: Optional[str] = ModelKeyOpt,
    store: Optional[Path] = StoreOpt, as_json: bool = JsonOpt, quiet: bool = QuietOpt,
) -> None:
    """Select the nouns that describe the images (GradNorm; TAC/SIC as special cases)."""
    if sample.strip().lower() == "all":
        sample_n = None
    elif sample.strip().isdigit():
        sample_n = int(sample)
    else:
        raise mdclust.BadInput(f"--sample must be a number of images or 'all', not {sample!r}")
    objs = []
    for name in _reading_once(_methods(method, methods.check_filter)):
        res = mdclust.filter_nouns(_store(store), interest, method=name, pool=pool, k=_k(k),
                                   k_max=k_max,
                                   clusters=clusters, beta=beta, tau=tau, epochs=epochs, lr=lr,
                                   batch=batch, min_steps=min_steps, seed=seed, model=model,
                                   template=template, sample=sample_n,
                                   show_progress=not (quiet or as_json))
        _say_k(res.k_choice, quiet)
        objs.append(res.to_json())
        if not (as_json or quiet):
            shown = ", ".join(res.selected[:40]) + (" ..." if len(res.selected) > 40 else "")
            typer.echo(f"{len(res.selected)} of {res.pool_size} nouns kept for "
                       f"{res.interest!r} ({res.method}, C = {res.classes}, "
                       f"{res.seconds:.1f} s): {shown}")
    if as_json:
        _emit_results(objs)


@app.command("cluster")
@_command
def cluster_cmd(
    interest: Optional[str] = InterestOpt,
    method: list[str] = typer.Option(["kmeans"], metavar="<names>",
                                     help="kmeans, zeroshot, gradnorm, tac, sic, multidproxy "
                                     "or pipcdr; repeat (or comma-separate) for several in "
                                     "one run."),
    k: str = typer.Option("auto", help="Number of clusters, or auto: the candidates' --k, "
                                      "a trained method's own, else chosen (docs/k.md)."),
    k_max: Optional[int] = KMaxOpt,
    seed: int = typer.Option(0, help="k-means seed."),
    spherical: bool = typer.Option(False, help="kmeans: cluster by cosine on the sphere."),
    kappa: Optional[float] = typer.Option(
        None, help="gradnorm/tac/sic: text-counterpart temperature [default: the paper's 0.006 "
        "at CLIP's logit scale of 100, scaled to the model's own]."),
    backend: str = BackendOpt,
    names_from: Optional[str] = typer.Option(None, help="Name the clusters with this "
                                             "interest's candidates (interest-free methods)."),
    hubness: str = typer.Option("auto", help="zeroshot/gradnorm/tac/sic and names: median "
                                "(each word's cosines taken relative to its median over the "
                                "images), none, or auto: median for --source wordnet "
                                "candidates only (docs/methods/hubness.md)."),
    model: Optional[str] = ModelKeyOpt,
    store: Optional[Path] = StoreOpt, as_json: bool = JsonOpt, quiet: bool = QuietOpt,
) -> None:
    """Cluster the images for an interest with a method; stores labels, names and features."""
    objs = []
    for name in _reading_once(_methods(method, methods.get)):
        res = mdclust.cluster(_store(store), interest, method=name, k=_k(k), k_max=k_max,
                              seed=seed,
                              model=model, spherical=spherical, kappa=kappa, backend=backend,
                              names_from=names_from, hubness=hubness)
        _say_k(res.k_choice, quiet)
        objs.append(res.to_json())
        if not (as_json or quiet):
            named = f"; clusters: {', '.join(res.names)}" if res.names else ""
            typer.echo(f"{res.n} images in {res.k} clusters ({res.method}"
                       + (f", interest {res.interest!r}" if res.interest else "")
                       + f"), sizes {res.sizes}{named}")
    if as_json:
        _emit_results(objs)


@app.command("train")
@_command
def train_cmd(
    interest: Optional[str] = typer.Option(None, "--interest", "-i", help="The user's interest "
                                           "(optional for pipcdr)."),
    method: str = typer.Option("multidproxy", help="multidproxy or pipcdr."),
    k: str = typer.Option("auto", help="Number of clusters, or auto: the candidates' --k, "
                                      "else chosen (docs/k.md)."),
    k_max: Optional[int] = KMaxOpt,
    epochs: Optional[int] = typer.Option(None, help="Epochs [default: 1000 multidproxy, "
                                                    "300 pipcdr]."),
    lr: Optional[float] = typer.Option(None, help="Adam learning rate [default: 1e-2 "
                                                  "multidproxy, 1e-3 pipcdr]."),
    wd: Optional[float] = typer.Option(None, help="Weight decay [default: 0 multidproxy, "
                                                  "1e-5 pipcdr]."),
    batch: Optional[int] = typer.Option(None, help="Batch size [default: 256 multidproxy, "
                                                   "64 pipcdr]."),
    sigma: Optional[float] = typer.Option(None, help="multidproxy: L_c temperature [0.2]; "
                                                     "pipcdr: PIP sampling noise [0.1]."),
    checkpoint_every: Optional[int] = typer.Option(None, help="Epochs between checkpoints "
                                                              "[default: 50 / 10]."),
    preset: str = typer.Option("recommended", help="multidproxy: recommended (the defaults "
                               "below) or paper (Algorithm 1 read literally; "
                               "docs/methods/multidproxy.md)."),
    refine_every: Optional[int] = typer.Option(None, help="multidproxy: candidate refinement "
                                                          "interval R [200]."),
    layers: Optional[int] = typer.Option(None, help="multidproxy: gated fusion layers L [1]."),
    tau_alpha: Optional[float] = typer.Option(None, help="multidproxy: proxy temperature "
                                                         "tau_alpha [0.2]."),
    object_word: Optional[str] = typer.Option(None, "--object", help="multidproxy: [object] "
                                              "in the prompt 'A [object] with [u] of *' "
                                              "[object]."),
    text_side: Optional[str] = typer.Option(None, help="multidproxy: t*_i from [t; w_i]: "
                                            "identity (projection initialised to w_i), proxy "
                                            "(t* = w_i) or linear (random projection) "
                                            "[identity]."),
    negatives: Optional[str] = typer.Option(None, help="multidproxy: L_c: infonce (own proxy "
                                            "as positive; not in the paper) or batch (every "
                                            "j != i, Eq. 7 as written) [infonce]."),
    refine_timing: Optional[str] = typer.Option(None, help="multidproxy: halvings at R/2, "
                                                "3R/2 ... (mid) or R, 2R ... E (end) [mid]."),
    proxy_align: Optional[bool] = typer.Option(None, "--proxy-align/--no-proxy-align",
                                               help="multidproxy: also align each proxy with "
                                                    "its image; not in the paper [on]."),
    candidate_score: Optional[str] = typer.Option(None, help="multidproxy: refinement score of "
                                                  "a candidate: max (best cosine to a centroid; "
                                                  "not in the paper), mean (paper), specific "
                                                  "(max less mean) or auto: specific for "
                                                  "--source wordnet lists, else max [auto]."),
    u_weight: Optional[float] = typer.Option(None, help="multidproxy: factor on alpha(t), the "
                                                        "weight of L_u (1 = paper) [0.1]."),
    reference: Optional[int] = typer.Option(None, help="multidproxy: images every image "
                                                       "attends over for the stored features "
                                                       "[4096]."),
    grid: bool = typer.Option(False, help="multidproxy: choose lr and weight decay from the "
                                          "paper's grid by a label-free score (silhouette)."),
    grid_epochs: Optional[int] = typer.Option(None, help="multidproxy: epochs per grid trial "
                                                         "[default: --epochs]."),
    restarts: Optional[int] = typer.Option(None, help="multidproxy: train with seeds SEED .. "
                                           "SEED+N-1; keep the best-separated (silhouette) of "
                                           "the runs with the lowest final loss (no labels) "
                                           "[1]."),
    features: str = typer.Option("images", help="pipcdr: what to train on: images, or "
                                                "INTEREST:METHOD (e.g. color:multidproxy)."),
    views: str = typer.Option("auto", help="pipcdr: stored view set (e.g. crop+flip), auto "
                                           "(the stored one; if none, 8 crop+flip views per "
                                           "image are encoded first, as `embed --views 8` "
                                           "does) or none (feature-space augmentation)."),
    ema: Optional[float] = typer.Option(None, help="pipcdr: target momentum [0.99]."),
    tau: Optional[float] = typer.Option(None, help="pipcdr: dispersion temperature [0.2]."),
    w_pip: Optional[float] = typer.Option(None, help="pipcdr: weight of PIP against CDR "
                                                     "[0.7]."),
    kmeans_every: Optional[int] = typer.Option(None, help="pipcdr: epochs between k-means "
                                                          "pseudo-label refreshes [2]."),
    queue: Optional[int] = typer.Option(None, help="pipcdr: memory queue length [4096]."),
    seed: int = typer.Option(0, help="Seed (weights, batches, k-means)."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or mps."),
    model: Optional[str] = ModelKeyOpt,
    store: Optional[Path] = StoreOpt, as_json: bool = JsonOpt, quiet: bool = QuietOpt,
) -> None:
    """Learn clustering features (Multi-DProxy, PIPCDR); resumable after an interruption."""
    k = _k(k)
    given = {name: value for name, value in (
        ("epochs", epochs), ("lr", lr), ("weight_decay", wd), ("batch", batch),
        ("sigma", sigma), ("checkpoint_every", checkpoint_every)) if value is not None}
    if methods.get(method, kind="trained").name == "pipcdr":
        given.update({name: value for name, value in (
            ("ema", ema), ("tau", tau), ("w_pip", w_pip), ("kmeans_every", kmeans_every),
            ("queue", queue)) if value is not None})
        cfg = methods.get("pipcdr").settings(k=k, seed=seed, features=features, views=views,
                                               **given)
    else:
        given.update({name: value for name, value in (
            ("refine_every", refine_every), ("layers", layers), ("tau_alpha", tau_alpha),
            ("object_word", object_word), ("text_side", text_side), ("negatives", negatives),
            ("refine_timing", refine_timing), ("proxy_align", proxy_align),
            ("candidate_score", candidate_score), ("u_weight", u_weight),
            ("reference", reference), ("restarts", restarts))
            if value is not None})
        cfg = config_for(k or 0, preset, seed=seed, **given)
    res = mdclust.train(_store(store), interest, method=method, k=k, k_max=k_max, config=cfg,
                        device=device, model=model, grid=grid, grid_epochs=grid_epochs,
                        show_progress=not (quiet or as_json))
    if (res.augmentation.startswith("feature-space") or "made now" in res.augmentation) \
            and not as_json and not quiet:
        typer.echo(f"mdclust: note: views from {res.augmentation}", err=True)
    _say_k(res.k_choice, quiet)
    if as_json:
        _emit_json(res.to_json())
    elif not quiet:
        resumed = f", resumed at epoch {res.resumed_from}" if res.resumed_from else ""
        what = f" for {res.interest!r}" if res.interest else ""
        line = (f"{res.method}{what}: {res.epochs} epochs on {res.n} images in "
                f"{res.seconds:.1f} s ({res.seconds_per_epoch * 1000:.0f} ms/epoch{resumed})")
        if res.method == "pipcdr":
            line += f"; features {res.features}, views: {res.augmentation}"
        else:
            line += (f"; candidates {res.candidates_start} -> {len(res.candidates)}: "
                     + ", ".join(res.candidates))
            if res.restarts:
                line += (f"; kept seed {res.seed} of {len(res.restarts)} restarts "
                         "(lowest loss, then silhouette)")
        typer.echo(line)


@app.command("eval")
@_command
def eval_cmd(
    interest: Optional[str] = InterestOpt,
    method: list[str] = typer.Option(["kmeans"], metavar="<names>",
                                     help="The clustering to score; repeat (or "
                                     "comma-separate) for several in one run."),
    aspect: Optional[str] = typer.Option(None, help="Ground-truth aspect [default: the "
                                                    "interest's name, or the only one]."),
    labels: Optional[Path] = typer.Option(None, help="Ground-truth CSV (path, aspects...) "
                                                     "instead of the stored labels."),
    runs: int = typer.Option(10, help="k-means runs (seeds 0..runs-1) on the method's "
                                      "features; mean and std are reported."),
    fail_under_nmi: Optional[float] = typer.Option(None, help="Exit 1 when the mean NMI is "
                                                              "below this (CI gate)."),
    backend: str = BackendOpt,
    store: Optional[Path] = StoreOpt, as_json: bool = JsonOpt, quiet: bool = QuietOpt,
) -> None:
    """Score a clustering: NMI, ARI, ACC, RI against ground truth when there is any, and
    stability, silhouette and interest agreement without labels."""
    objs, failed = [], []
    for name in _reading_once(_methods(method, methods.get)):
        try:
            res = mdclust.evaluate(_store(store), interest, method=name, aspect=aspect,
                                   labels=labels, runs=runs, fail_under_nmi=fail_under_nmi,
                                   backend=backend)
        except mdclust.QualityGateFailed as exc:
            # the other methods are still scored: a gate over several says which fell short
            objs.append(exc.details)
            failed.append(exc)
            continue
        objs.append(res.to_json())
        if not (as_json or quiet):
            _say_eval(res)
    if as_json:
        _emit_results(objs)
    if len(failed) == 1:
        raise failed[0]
    if failed:
        raise mdclust.QualityGateFailed("; ".join(str(exc) for exc in failed))


def _say_eval(res) -> None:
    runs = f"{res.runs} run{'s' if res.runs > 1 else ''}"
    if res.labelled:
        typer.echo(f"{res.method} on {res.aspect} ({res.n} images, k = {res.k}, {runs}): "
                   + "  ".join(f"{m.upper()} {getattr(res, m):.4f}±"
                               f"{getattr(res, m + '_std'):.4f}" for m in mdclust.METRICS))
    free = [(name, getattr(res, key)) for name, key in (
        ("stability", "stability"), ("silhouette", "silhouette"),
        ("interest agreement", "interest_agreement")) if getattr(res, key) is not None]
    typer.echo(("without labels" if res.labelled else
                f"{res.method} ({res.n + res.unlabeled} images, k = {res.k}, {runs}), "
                "no labels") + ": " + "  ".join(f"{name} {v:.3f}" for name, v in free))


@app.command("export")
@_command
def export_cmd(
    interest: Optional[str] = InterestOpt,
    method: str = typer.Option("kmeans", help="The clustering to export."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="File to write [default: "
                                                                 "stdout; parquet needs one]."),
    format: str = typer.Option("csv", "--format", help="csv, parquet or jsonl."),
    with_scores: bool = typer.Option(False, "--with-scores", help="Add each image's cosine "
                                     "similarity to its cluster's name (a score column)."),
    to_folders: Optional[Path] = typer.Option(None, "--to-folders", help="Instead: one folder "
                                              "per cluster, named by its name, of links to "
                                              "the images (replaces an earlier such tree)."),
    copy: bool = typer.Option(False, "--copy", help="--to-folders: copy the images instead "
                                                    "of linking to them."),
    raw: bool = typer.Option(False, "--raw", help="csv: write cells as stored: no leading ' "
                                                  "before = + - @ tab CR (docs/cli.md, CSV "
                                                  "rules)."),
    store: Optional[Path] = StoreOpt, as_json: bool = JsonOpt, quiet: bool = QuietOpt,
) -> None:
    """Write a clustering out: CSV (path,cluster[,name][,score]), Parquet or JSON Lines, one
    row per image; or --to-folders DIR. With --json and no --out: one object {method,
    interest, n, out, rows: [{path, cluster[, name][, score]}]} (values as stored, cluster an
    integer); with --out, the same object without rows. A clustering made before the images
    changed is written as stored, with a warning."""
    import io

    def warn(message: str) -> None:
        if not quiet:
            typer.echo(f"mdclust: warning: {message}", err=True)

    st = _store(store)
    if to_folders is not None:
        res = mdclust.export_folders(st, interest, method=method, out=to_folders, copy=copy,
                                     warn=warn)
        if as_json:
            _emit_json(res.to_json())
        elif not quiet:
            typer.echo(f"{res.linked} images {'copied' if copy else 'linked'} into "
                       f"{len(res.folders)} folders under {res.out}")
        return
    if as_json and out is None:  # JSON is not a spreadsheet: the values as they are
        buf = io.StringIO()
        mdclust.export(st, interest, method=method, out=buf, format="jsonl",
                       with_scores=with_scores, warn=warn)
        rows = [json.loads(line) for line in buf.getvalue().splitlines()]
        _emit_json({"method": method, "interest": interest, "n": len(rows), "out": None,
                    "rows": rows})
        return
    res = mdclust.export(st, interest, method=method, out=sys.stdout if out is None else out,
                         format=format, with_scores=with_scores, raw=raw, warn=warn)
    if as_json:
        _emit_json({"method": method, "interest": interest, "n": res.n, "out": str(out),
                    "format": res.format, "rows": []})


datasets_app = typer.Typer(no_args_is_help=True, help="Generate synthetic image sets.")
app.add_typer(datasets_app, name="datasets")


@datasets_app.command("shapes")
@_command
def datasets_shapes(
    out_dir: Path = typer.Argument(..., help="Folder to write the PNGs, labels.csv and "
                                             "vocabulary.json into."),
    n: int = typer.Option(3000, help="Number of images."),
    seed: int = typer.Option(0, help="Random seed (same seed, same values and images)."),
    size: int = typer.Option(64, help="Image side in pixels."),
    values: Optional[str] = typer.Option(
        None, help="Values per aspect drawn from its vocabulary, e.g. 'color=6,shape=all' "
                   "[default: color=6,shape=6,background=5,count=4,texture=4]."),
    store: Optional[Path] = StoreOpt, as_json: bool = JsonOpt, quiet: bool = QuietOpt,
) -> None:
    """One to four coloured objects on a patterned background: aspects color, shape,
    background, count and texture, each a random subset of a larger vocabulary."""
    from mdclust.datasets import generate_shapes  # public, not a stage

    _write_set(generate_shapes, out_dir, n, seed, size, values, as_json, quiet)


@datasets_app.command("glyphs")
@_command
def datasets_glyphs(
    out_dir: Path = typer.Argument(..., help="Folder to write the PNGs, labels.csv and "
                                             "vocabulary.json into."),
    n: int = typer.Option(3000, help="Number of images."),
    seed: int = typer.Option(0, help="Random seed (same seed, same values and images)."),
    size: int = typer.Option(64, help="Image side in pixels."),
    values: Optional[str] = typer.Option(
        None, help="Values per aspect drawn from its vocabulary, e.g. 'character=10,"
                   "typeface=all' [default: character=6,typeface=4,weight=2,slant=2,color=6,"
                   "background=5]."),
    store: Optional[Path] = StoreOpt, as_json: bool = JsonOpt, quiet: bool = QuietOpt,
) -> None:
    """One capital letter in a real font on a patterned background: aspects character,
    typeface, weight, slant, color and background, each a random subset of a vocabulary."""
    from mdclust.datasets import generate_glyphs  # public, not a stage

    _write_set(generate_glyphs, out_dir, n, seed, size, values, as_json, quiet)


def _write_set(generate, out_dir: Path, n: int, seed: int, size: int, values: Optional[str],
               as_json: bool, quiet: bool) -> None:
    """Generate a set with one world's generator and report what it holds."""
    from mdclust.datasets import read_vocabulary

    labels = generate(out_dir, n=n, seed=seed, size=size, values=values)
    vocab = read_vocabulary(out_dir)
    if as_json:
        _emit_json({"out_dir": str(out_dir), "n": n, "seed": seed, "labels": str(labels),
                    "vocabulary": str(Path(out_dir) / "vocabulary.json"),
                    "aspects": {a: v["present"] for a, v in vocab.items()}})
    elif not quiet:
        typer.echo(f"{n} images and {labels} written; values present (of the vocabulary): "
                   + "; ".join(f"{a} {len(v['present'])}/{len(v['vocabulary'])}"
                               for a, v in vocab.items()))


@app.command()
@_command
def report(
    out: Path = typer.Option(..., "--out", "-o", help="Folder for index.html and thumbs/ "
                                                      "(outside the image folder)."),
    interest: Optional[list[str]] = typer.Option(None, "--interest", "-i", help="Only this "
                                                 "interest (repeatable) [default: all]."),
    method: Optional[list[str]] = typer.Option(None, help="Only this method (repeatable) "
                                                          "[default: all]."),
    thumbs: int = typer.Option(12, help="Thumbnails per cluster, the most central first."),
    aspect: Optional[str] = typer.Option(None, help="Ground-truth aspect for the metrics "
                                                    "[default: the interest's name]."),
    map_points: int = typer.Option(3000, help="Points on each 2-D map (a seeded sample)."),
    thumb_size: int = typer.Option(96, help="Thumbnail side in pixels."),
    map: str = typer.Option("auto", "--map", help="2-D maps by umap (pip install "
                            "'mdclust[umap]'), pca, or auto (UMAP where installed)."),
    store: Optional[Path] = StoreOpt, as_json: bool = JsonOpt, quiet: bool = QuietOpt,
) -> None:
    """Write a static HTML report: named clusters with thumbnails, metrics, cross-tabs, maps."""
    res = mdclust.report(_store(store), out, interests=interest or None, methods=method or None,
                         thumbs=thumbs, aspect=aspect, map_points=map_points,
                         thumb_size=thumb_size, map=map, show_progress=not (quiet or as_json))
    if res.missing_images and not as_json:
        typer.echo(f"mdclust: warning: {len(res.missing_images)} images could not be read "
                   f"(moved, deleted or too large? e.g. {res.missing_images[0]}); shown as "
                   "placeholders",
                   err=True)
    if as_json:
        _emit_json(res.to_json())
    elif not quiet:
        typer.echo(f"{res.clusterings} clusterings, {res.clusters} clusters; "
                   f"{res.thumbnails_written} thumbnails written, {res.thumbnails_reused} reused; "
                   f"page {res.page_bytes / 1e6:.1f} MB. Open {Path(res.index).resolve()}")


@app.command()
@_command
def models(store: Optional[Path] = StoreOpt, as_json: bool = JsonOpt,
           quiet: bool = QuietOpt) -> None:
    """List the open_clip model names that --model accepts (bundled configs included).
    (--store is accepted like everywhere, and not used.)"""
    found = mdclust.models()
    if as_json:
        _emit_json(found)
        return
    typer.echo("\n".join(found["models"]))


def main() -> None:
    """Run the CLI; usage errors (unknown option, bad value) become one line and exit 2."""
    try:  # typer 0.2x carries its own copy of click
        from typer._click import exceptions as click
    except ImportError:  # pragma: no cover - older typer on the real click
        from click import exceptions as click

    try:
        code = app(standalone_mode=False)
    except click.NoArgsIsHelpError as exc:
        exc.show()  # `mdclust` or a group alone: the help, as before
        code = 2
    except click.ClickException as exc:
        where = exc.ctx.command_path if getattr(exc, "ctx", None) else "mdclust"
        typer.echo(f"mdclust: error: {' '.join(exc.format_message().split())} "
                   f"(see `{where} --help`)", err=True)
        code = 2
    except typer.Abort:  # typer's own class from 0.2x on, click's before; typer names both
        typer.echo("mdclust: error: interrupted", err=True)
        code = 130
    except SystemExit as exc:  # a sys.exit below the commands: its code, by the same exit
        code = exc.code
    _exit(code if isinstance(code, int) else (0 if code is None else 1))


def _exit(code: int) -> None:
    """Exit without the interpreter's module teardown when nothing can be lost by it: with
    torch and open_clip loaded that teardown alone takes ~0.8 s of every command (2 CPUs).

    The atexit handlers still run and stdout/stderr are flushed; the fast way is taken only
    with no other thread alive and no HDF5 file open, else the ordinary exit."""
    import atexit
    import threading

    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed pipe: the ordinary exit reports it as before
        sys.exit(code)
    if threading.active_count() > 1 or _hdf5_open() or os.environ.get("MDCLUST_SLOW_EXIT"):
        sys.exit(code)
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def _hdf5_open() -> bool:
    h5f = sys.modules.get("h5py.h5f")
    return h5f is not None and h5f.get_obj_count(h5f.OBJ_ALL, h5f.OBJ_FILE) > 0


if __name__ == "__main__":
    main()
