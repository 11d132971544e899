"""Faults at the Python API's boundary (issue #22, items 12 and 13): arguments of the wrong type
or with characters a store cannot hold are one BadInput naming the CLI flag, not a TypeError
deep inside or a silent change; a words file that is not a regular UTF-8 text file says what
it is, through the API and the CLI, without hanging."""

import inspect
import os
import subprocess

import numpy as np
import pytest
from conftest import MDCLUST, embedded_store

import mdclust


def run(*args, timeout=120):
    return subprocess.run([MDCLUST, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def error_line(res) -> str:
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mdclust: error: "), res.stderr
    return lines[0]


@pytest.fixture
def small(tmp_path):
    return embedded_store(tmp_path, 12)


@pytest.mark.parametrize("call, message", [
    (lambda s: mdclust.cluster(s, method="kmeans", k="3"), "--k must be an integer, not '3'"),
    (lambda s: mdclust.cluster(s, method="kmeans", k=3.7), "--k must be an integer, not 3.7"),
    (lambda s: mdclust.cluster(s, method="kmeans", k=True), "--k must be an integer, not True"),
    (lambda s: mdclust.cluster(s, method="kmeans", k=3, seed="x"),
     "--seed must be an integer, not 'x'"),
    (lambda s: mdclust.cluster(s, 123, method="kmeans", k=3),
     "--interest must be a string, not 123"),
    (lambda s: mdclust.evaluate(s, method="kmeans", runs="2"),
     "--runs must be an integer, not '2'"),
    (lambda s: mdclust.report(s, s.path.parent / "r", thumbs="3"),
     "--thumbs must be an integer, not '3'"),
    (lambda s: mdclust.report(s, s.path.parent / "r", interests="color"),
     "--interest must be a list of strings, not 'color'"),
    (lambda s: mdclust.candidates(s, "x", source="wordnet", timeout="60"),
     "--timeout must be a number, not '60'"),
    (lambda s: mdclust.filter_nouns(s, "x", k=2, tau=float("nan")),
     "--tau must be a number, not nan"),
    (lambda s: mdclust.export_csv(s, method="kmeans", out=5),
     "--out must be a path or an open text file, not 5"),
])
def test_wrong_types_are_bad_input_naming_the_flag(small, tmp_path, call, message):
    words = tmp_path / "w.txt"
    words.write_text("red\ngreen\nblue\n")
    mdclust.candidates(small, "x", from_file=words)  # so that each call gets to its argument
    mdclust.cluster(small, method="kmeans", k=2)
    before = small.path.read_bytes()
    with pytest.raises(mdclust.BadInput) as info:
        call(small)
    assert str(info.value) == message
    assert small.path.read_bytes() == before


def test_integral_floats_and_numpy_integers_are_integers(small):
    res = mdclust.cluster(small, method="kmeans", k=3.0, seed=np.int64(1))
    assert res.k == 3 and isinstance(res.k, int) and len(set(res.labels)) == 3


def test_every_stage_checks_its_arguments_and_keeps_its_signature():
    """Each public stage is checked (a bad store is BadInput, not whatever as_store does with
    123) and still shows its own signature and docstring (test_layout reads them)."""
    from mdclust.stages import candidates, cluster, embed, evaluate, filter, info, report, train

    stages = {"embed": embed.embed, "candidates": candidates.candidates,
              "filter_nouns": filter.filter_nouns, "train": train.train,
              "cluster": cluster.cluster, "load_clustering": cluster.load_clustering,
              "evaluate": evaluate.evaluate, "export_csv": evaluate.export_csv,
              "info": info.info, "models": info.models, "report": report.report}
    for name, raw in stages.items():
        fn = getattr(mdclust, name)
        assert inspect.signature(fn) == inspect.signature(raw) and fn.__doc__ == raw.__doc__
        required = [p for p in inspect.signature(raw).parameters.values()
                    if p.default is p.empty and p.kind is p.POSITIONAL_OR_KEYWORD]
        if not required:
            continue
        args = [123] + ["x"] * (len(required) - 1)
        with pytest.raises(mdclust.BadInput, match=r"^(IMAGES_DIR|--store) must be .*not 123$"):
            fn(*args)


def test_error_messages_name_real_cli_options():
    """The flag a message names is the command's own option (or, for a parameter the CLI does
    not have, the parameter's name)."""
    from typer.main import get_command

    from mdclust.cli import app

    commands = get_command(app).commands
    cli_name = {"filter_nouns": "filter", "evaluate": "eval", "export_csv": "export"}
    for name in ("embed", "candidates", "filter_nouns", "train", "cluster", "evaluate",
                 "export_csv", "info", "report"):
        command = commands[cli_name.get(name, name)]
        spelled = {o for p in command.params for o in (*p.opts, p.name.upper())}
        for param, flag in getattr(mdclust, name).flags.items():
            assert flag in spelled or flag == param, (name, param, flag)


@pytest.mark.parametrize("bad", ["a\x00b", "a\x01b", "\x7f"])
def test_interest_names_with_control_characters_are_refused(small, tmp_path, bad):
    words = tmp_path / "w.txt"
    words.write_text("red\ngreen\nblue\n")
    before = small.path.read_bytes()
    with pytest.raises(mdclust.BadInput, match="--interest must be text without"):
        mdclust.candidates(small, bad, from_file=words)
    assert small.path.read_bytes() == before  # "a\x00b" was stored as interest "a"


def test_interest_names_are_checked_below_the_api_too():
    from mdclust.core.layout import validate_interest

    for bad in ("a\x00b", "a\x01", "a/b", ".a"):
        with pytest.raises(mdclust.BadInput, match="invalid interest name"):
            validate_interest(bad)
    with pytest.raises(mdclust.BadInput, match="--interest must be a string, not 123"):
        validate_interest(123)
    assert validate_interest(" a\tb\n ") == "a b"
    assert validate_interest("a\x00b".replace("\x00", " ")) == "a b"


def test_a_control_character_in_an_interest_is_one_line_on_the_cli(small):
    res = run("candidates", "--interest", "a\x01b", "--source", "wordnet", "--store",
              small.path)
    assert res.returncode == 2
    assert "--interest must be text without control characters" in error_line(res)


def test_a_words_file_with_a_utf8_bom_keeps_no_bom(small, tmp_path):
    words = tmp_path / "w.txt"
    words.write_bytes("red\ngreen\nblue\n".encode("utf-8-sig"))
    res = mdclust.candidates(small, "color", from_file=words, encode=False)
    assert res.words == ["red", "green", "blue"]


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "words.fifo"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("kind, message", [
    ("/dev/zero", "is a device, not a regular file; give a regular text file"),
    ("fifo", "is a FIFO (named pipe), not a regular file; give a regular text file"),
    ("dir", "is a directory, not a regular file; give a regular text file"),
])
def test_a_words_file_that_is_not_a_regular_file_says_what_it_is(small, tmp_path, fifo, kind,
                                                                   message):
    path = {"/dev/zero": "/dev/zero", "fifo": fifo, "dir": tmp_path}[kind]
    before = small.path.read_bytes()
    with pytest.raises(mdclust.BadInput, match=message.replace("(", r"\(").replace(")", r"\)")):
        mdclust.candidates(small, "x", from_file=path)
    res = run("candidates", "--interest", "x", "--from-file", path, "--store", small.path,
              timeout=60)  # a FIFO opened for reading would block here until killed
    assert res.returncode == 2 and message in error_line(res)
    assert small.path.read_bytes() == before


@pytest.mark.parametrize("data, message", [
    ("red\ngreen\n".encode("utf-16"), "is UTF-16 text, not UTF-8; save it as UTF-8"),
    ("red\ngreen\n".encode("utf-16-le"), "is not text (it holds NUL bytes at byte 1"),
    (b"red\n\x00\x00\x00\x07ELF", "is not text (it holds NUL bytes at byte 4"),
])
def test_a_words_file_that_is_not_utf8_text_says_so(small, tmp_path, data, message):
    words = tmp_path / "w.txt"
    words.write_bytes(data)
    res = run("candidates", "--interest", "x", "--from-file", words, "--store", small.path)
    assert res.returncode == 2 and message in error_line(res)
    with pytest.raises(mdclust.BadInput, match="save it as UTF-8"):
        mdclust.candidates(small, "x", from_file=words)
