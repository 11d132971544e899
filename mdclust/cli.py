"""The `mdclust` command line: a thin layer over the stage functions.

Conventions: every command takes --store; --json prints exactly one JSON object on stdout;
--quiet silences progress; exit 0 = done, 1 = a quality gate failed, 2 = bad input or a failed
dependency, always with a one-line message on stderr. Heavy libraries are imported inside the
commands so that `mdclust --help` and `mdclust info` answer quickly.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Optional

import typer

from . import __version__

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

        from .errors import MdclustError

        # open_clip logs through the root logger; without a handler Python would print its
        # warnings to stderr and break the one-line-error promise.
        if not logging.getLogger().handlers:
            logging.getLogger().addHandler(logging.NullHandler())
        try:
            return fn(*args, **kwargs)
        except MdclustError as exc:
            _fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted; rerun the same command to resume", 130)

    return wrapper


def _store(path: Optional[Path]):
    from .store import Store

    return Store(path)


def _emit_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, default=str) + "\n")


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
    images_dir: Path = typer.Argument(..., help="Folder of images (searched recursively)."),
    model: str = typer.Option("ViT-B-32", help="open_clip model name (see `mdclust models`)."),
    pretrained: str = typer.Option("openai", help="open_clip tag, a local weights file, "
                                                  "or 'random'."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or mps."),
    precision: str = typer.Option("auto", help="auto (fp16 on CUDA, else fp32), fp32, fp16 or "
                                               "bf16."),
    batch_size: int = typer.Option(64, help="Images per forward pass."),
    workers: Optional[int] = typer.Option(None, help="Decoding processes running beside the "
                                                     "model [default: CPUs - 1, at most 8]; 0 decodes "
                                                     "inline."),
    labels: Optional[Path] = typer.Option(None, help="CSV: path, then one column per aspect."),
    allow_download: bool = typer.Option(False, help="Let open_clip fetch weights from the hub."),
    store: Optional[Path] = StoreOpt, as_json: bool = JsonOpt, quiet: bool = QuietOpt,
) -> None:
    """Embed images with CLIP into the store (incremental and resumable)."""
    from .embed import embed as run_embed

    st = _store(store)
    res = run_embed(images_dir, st, model=model, pretrained=pretrained, device=device,
                    batch_size=batch_size, workers=workers, precision=precision, labels=labels,
                    allow_download=allow_download, show_progress=not (quiet or as_json))
    if res.labels_unknown:
        typer.echo(f"mdclust: warning: {len(res.labels_unknown)} label rows name no stored image "
                   f"(e.g. {res.labels_unknown[0]})", err=True)
    if as_json:
        _emit_json({"store": str(st.path), **res.to_json()})
        return
    if quiet:
        return
    out = _console()
    out.print(f"[bold]{res.images}[/] images in {st.path} ({res.model_key}): "
              f"{res.embedded} embedded, {res.reused} reused, {res.dropped} dropped, "
              f"{len(res.skipped)} skipped in {res.seconds:.1f} s"
              + (f" ({res.images_per_second:.1f} img/s)" if res.embedded else ""))
    for path, reason in res.skipped[:20]:
        out.print(f"  skipped {path}: {reason}", markup=False)
    if len(res.skipped) > 20:
        out.print(f"  ... and {len(res.skipped) - 20} more (see `mdclust info`)")
    if res.labels_aspects:
        out.print(f"labels stored for aspects: {', '.join(res.labels_aspects)}")


@app.command()
@_command
def info(store: Optional[Path] = StoreOpt, as_json: bool = JsonOpt,
         quiet: bool = QuietOpt) -> None:
    """Summarise what a store holds."""
    from .info import info as run_info

    st = _store(store)
    if not st.exists():
        _fail(f"no store at {st.path}; run `mdclust embed IMAGES_DIR` first", 2)
    data = run_info(st)
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
    table = Table("model key", "model", "pretrained", "dim", "rows", "time", title="features")
    for m in data["model_details"]:
        table.add_row(m["key"], str(m["model"]), str(m["pretrained"]), str(m["dim"]),
                      str(m["rows"]), str(m["time"]))
    out.print(table)
    if data["interests"]:
        t2 = Table("interest", "stages", title="interests")
        for name, v in data["interests"].items():
            t2.add_row(name, ", ".join(v["stages"]))
        out.print(t2)


@app.command()
@_command
def models(as_json: bool = JsonOpt) -> None:
    """List the open_clip model names that --model accepts (bundled configs included)."""
    from .encoders import register_configs

    register_configs()
    import open_clip

    names = open_clip.list_models()
    if as_json:
        _emit_json({"models": names, "pretrained": [list(p) for p in open_clip.list_pretrained()]})
        return
    typer.echo("\n".join(names))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
