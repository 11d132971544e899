import json
import time

import pytest
from llm_server import FakeLLM
from typer.testing import CliRunner

from mdclust.cli import app
from mdclust.core.errors import MdclustError
from mdclust.core.store import Store
from mdclust.stages.candidates import candidates

MODEL = "openai/test-model"
SECRET = "sk-test-SECRET-4242"


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    s = FakeLLM()
    yield s
    s.close()


def ask(server, store_path, **kw):
    kw.setdefault("n", 4)
    kw.setdefault("retries", 0)
    kw.setdefault("timeout", 10)
    return candidates(Store(store_path), "color", llm=MODEL, api_base=server.url, encode=False,
                      **kw)


def test_happy_path_is_stored_with_provenance_and_no_key(server, store_path):
    server.script = [("ok", '["Red", "blue", "the Oranges", "yellow"]')]
    res = ask(server, store_path, context="photos of fruit")
    assert res.words == ["red", "blue", "orange", "yellow"]
    assert len(server.requests) == 1
    req = server.requests[0]
    assert req["path"] == "/v1/chat/completions" and req["auth"] == f"Bearer {SECRET}"
    prompt = req["body"]["messages"][-1]["content"]
    assert "photos of fruit" in prompt and '"color"' in prompt and "4" in prompt
    g = Store(store_path).read_group("interests/color/candidates")
    assert g["word"] == res.words
    assert g.attrs["source"] == "llm" and g.attrs["model"] == MODEL
    assert g.attrs["raw_response"] == ['["Red", "blue", "the Oranges", "yellow"]']
    assert "photos of fruit" in g.attrs["prompts"][0]
    assert SECRET.encode() not in store_path.read_bytes()


def test_json_in_code_fence(server, store_path):
    server.script = [("ok", 'Here you go:\n```json\n["crimson", "navy", "lime", "gold"]\n```')]
    assert ask(server, store_path).words == ["crimson", "navy", "lime", "gold"]


def test_plain_bullet_list(server, store_path):
    server.script = [("ok", "Colors:\n- Red\n- Blue (the sky)\n* green\n1. Purple hues")]
    assert ask(server, store_path).words == ["red", "blue", "green", "purple hue"]


def test_malformed_then_success_asks_again(server, store_path):
    server.script = [("ok", "I would be happy to help with that!"),
                     ("ok", '["red", "blue", "green", "white"]')]
    res = ask(server, store_path)
    assert res.words == ["red", "blue", "green", "white"] and res.rounds == 2
    assert len(server.requests) == 2


def test_too_few_keeps_what_was_obtained(server, store_path):
    server.script = [("ok", '["red"]'), ("ok", '["blue"]'), ("ok", '["red"]')]
    res = ask(server, store_path, rounds=3)
    assert res.words == ["red", "blue"] and res.short_by == 2
    # the follow-up prompt lists what is already known
    assert "red" in server.requests[1]["body"]["messages"][-1]["content"]


def test_http_401_is_one_clear_error_and_store_unchanged(server, store_path):
    server.script = [("401", "Incorrect API key provided")]
    with pytest.raises(MdclustError, match="authentication failed.*OPENAI_API_KEY"):
        ask(server, store_path)
    assert not store_path.exists()


def test_http_500_then_success_is_retried(server, store_path):
    server.script = [("500", "upstream exploded"), ("ok", '["red", "blue", "green", "pink"]')]
    res = ask(server, store_path, retries=2)
    assert res.words == ["red", "blue", "green", "pink"]
    assert len(server.requests) == 2


def test_hang_past_timeout_fails_fast(server, store_path):
    server.script = [("hang", 6)]
    t0 = time.perf_counter()
    with pytest.raises(MdclustError, match="no answer within 1 s"):
        ask(server, store_path, timeout=1, retries=0)
    assert time.perf_counter() - t0 < 5
    assert not store_path.exists()


def test_same_request_is_served_from_the_store(server, store_path):
    server.script = [("ok", '["red", "blue", "green", "pink"]')]
    first = ask(server, store_path)
    second = ask(server, store_path)
    assert second.cached and second.words == first.words
    assert len(server.requests) == 1
    server.script = [("ok", '["cyan", "teal", "rose", "sand"]')]
    third = ask(server, store_path, refresh=True)
    assert third.words == ["cyan", "teal", "rose", "sand"] and len(server.requests) == 2


def test_cli_errors_are_one_line_exit_2(server, store_path):
    server.script = [("401", "bad key")]
    r = CliRunner().invoke(app, ["candidates", "--interest", "color", "--llm", MODEL,
                                 "--api-base", server.url, "--retries", "0", "--store",
                                 str(store_path), "--json", "--no-encode"])
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "authentication failed" in r.stderr


def test_cli_json_and_interests_in_info(server, store_path, tmp_path):
    server.script = [("ok", '["red", "blue", "green", "pink"]')]
    r = CliRunner().invoke(app, ["candidates", "--interest", "color", "--llm", MODEL, "--n", "4",
                                 "--api-base", server.url, "--store", str(store_path), "--json",
                                 "--no-encode"])
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["words"] == ["red", "blue", "green", "pink"] and out["count"] == 4
    words = tmp_path / "shapes.txt"
    words.write_text("# shapes\nCircles, squares\ntriangle\nstar\n")
    r = CliRunner().invoke(app, ["candidates", "--interest", "shape", "--from-file",
                                 str(words), "--n", "3", "--store", str(store_path), "--json"])
    assert json.loads(r.stdout)["words"] == ["circles", "squares", "triangle"]
    info = json.loads(CliRunner().invoke(app, ["info", "--json", "--store",
                                               str(store_path)]).stdout)
    assert set(info["interests"]) == {"color", "shape"}


def test_unreachable_server_is_a_connection_error(store_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with pytest.raises(MdclustError, match="cannot connect|no answer"):
        candidates(Store(store_path), "color", llm=MODEL, api_base="http://127.0.0.1:9/v1",
                   n=3, retries=0, timeout=3, encode=False)


def test_only_fast_failures_are_retried_with_backoff(server, store_path):
    server.script = [("500", "down"), ("503", "busy"), ("ok", '["red", "blue", "green", "pink"]')]
    t0 = time.perf_counter()
    res = ask(server, store_path, retries=2)
    assert res.words == ["red", "blue", "green", "pink"] and len(server.requests) == 3
    assert time.perf_counter() - t0 >= 3  # waited 1 s, then 2 s
    server.requests.clear()
    server.script = [("401", "bad key"), ("ok", '["red"]')]
    with pytest.raises(MdclustError, match="authentication failed"):
        ask(server, store_path, retries=2, refresh=True)
    assert len(server.requests) == 1  # an answer that will not change is not asked again


def test_a_hanging_server_costs_one_timeout_not_three(server, store_path):
    server.script = [("hang", 8), ("hang", 8), ("hang", 8)]
    t0 = time.perf_counter()
    with pytest.raises(MdclustError, match="no answer within 1 s"):
        ask(server, store_path, timeout=1, retries=2)
    assert time.perf_counter() - t0 < 5 and len(server.requests) == 1
    assert not store_path.exists()


def test_control_characters_and_prose_in_an_answer_are_cleaned(server, store_path):
    long = "a very long explanation of why this colour matters so much to everyone"
    server.script = [("ok", json.dumps(["re\u0000d", "blue\x07", long, "green", "pink",
                                        "teal"]))]
    res = ask(server, store_path, n=5)
    assert res.words == ["re d", "blue", "green", "pink", "teal"]
    assert Store(store_path).read_group("interests/color/candidates")["word"] == res.words
