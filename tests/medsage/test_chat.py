"""medsage.chat, the one OpenAI-compatible client, against SCRIPTED loopback servers (synth_server): a real
server cannot be told to echo the Authorization header into an error, send a bad ``usage``, or ask for a
Retry-After on demand. Checked through each user: synthesis, the judge and the openai eval backend."""

from __future__ import annotations

import json
import time

import pytest
import synth_server as H  # tests/helpers (pytest pythonpath)

from medsage.chat import CallError, ChatClient, ClientConfig, Message, client_config, redact
from medsage.records import RoI, write_records

SECRET = "sk-chat-test-secret-3141592653"
KEY_ENV = "MEDSAGE_CHAT_TEST_KEY"
OK = (200, H.completion("fine", 5, 3), 0.0)



def _echo_headers(body, headers):
    """A server error whose body quotes the request's headers (as some proxies do)."""
    return 500, {"error": {"message": f"upstream failed for {json.dumps(dict(headers))}"}}, 0.0


def _chat(cfg, messages=(Message("user", "hello"),)):
    async def go(client):
        return await client.chat(list(messages)), client.usage

    return ChatClient(cfg).run(go)


def _cfg(server, **kw) -> ClientConfig:
    return ClientConfig(**{"base_url": server.base_url, "model": "scripted", "backoff_s": 0.01,
                           "backoff_max_s": 0.05, "timeout_s": 5, "max_retries": 2, "api_key_env": KEY_ENV, **kw})


def test_redact_removes_key_values_and_key_shapes(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "plain-value-without-shape")
    ChatClient(ClientConfig(base_url="http://127.0.0.1:9/v1", model="m", api_key_env=KEY_ENV))
    text = redact("a plain-value-without-shape b Bearer abc.def c sk-abcdefghijkl d {'api_key': 'q1w2e3'}")
    assert "plain-value-without-shape" not in text and "abc.def" not in text and "abcdefghijkl" not in text
    assert "q1w2e3" not in text and text.count("[REDACTED]") == 4


def test_error_body_echoing_the_key_is_redacted(monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    with H.LoopbackServer(_echo_headers) as server:
        with pytest.raises(CallError) as err:
            _chat(_cfg(server, max_retries=0))
    assert server.headers[0]["authorization"] == f"Bearer {SECRET}"  # the server did see (and echo) it
    assert err.value.reason == "server_error" and "upstream failed" in err.value.detail
    assert SECRET not in str(err.value) and SECRET not in err.value.detail


def _records_file(demo_samples, path, n=2):
    for s in demo_samples[:n]:
        s.trajectory = None
        s.rois = [RoI("global", box=(0, 0, 112, 112), label="full image", origin="global")]
    write_records(path, demo_samples[:n])
    return path


def _synth_args(records, out, base_url, *extra):
    return ["run", "--records", str(records), "--out", str(out), "synthesizer=llm", f"client.base_url={base_url}",
            "client.model=scripted", f"client.api_key_env={KEY_ENV}", "client.max_retries=0", "client.backoff_s=0.01",
            "rpa.max_templates=1", *extra]


def test_synthesis_keeps_no_key_from_an_echoing_server(demo_samples, tmp_path, monkeypatch, capsys):
    from medsage.data_pipeline.synthesis.cli import main

    monkeypatch.setenv(KEY_ENV, SECRET)
    records = _records_file(demo_samples, tmp_path / "pool.jsonl")
    with H.LoopbackServer(_echo_headers) as server:
        assert main(_synth_args(records, tmp_path / "out", server.base_url)) == 0
    printed = capsys.readouterr()
    rejected = (tmp_path / "out" / "rejected.jsonl").read_text()
    assert "call_failed:server_error" in rejected and "[REDACTED]" in rejected  # the echo is kept, the key is not
    for f in (tmp_path / "out").rglob("*"):
        assert not f.is_file() or SECRET not in f.read_text(errors="replace"), f
    assert SECRET not in printed.out + printed.err


@pytest.mark.parametrize("override", ["+client.api_key=sk-inline-000000000", "+client.key=sk-inline-000000000"])
def test_a_key_in_the_synthesis_config_is_refused(demo_samples, tmp_path, capsys, override):
    from medsage.data_pipeline.synthesis.cli import main

    records = _records_file(demo_samples, tmp_path / "pool.jsonl")
    assert main(_synth_args(records, tmp_path / "out", "http://127.0.0.1:9/v1", override)) == 2
    err = capsys.readouterr().err
    assert f"${KEY_ENV}" in err and "sk-inline-000000000" not in err
    name = override.split("=")[0].lstrip("+")
    assert f"{name} holds an API key, which may not be written" in err and "[REDACTED]" not in err, err  # readable
    assert not (tmp_path / "out" / "report.json").exists()


def test_a_key_in_the_judge_or_backend_config_is_refused():
    from omegaconf import OmegaConf

    from medsage.eval.backends.base import GenerationConfig, make_backend
    from medsage.eval.judge import JudgeConfig
    from medsage.recipes import compose

    cfg = compose("eval", ["eval.data_root=x", "eval.judge.base_url=http://127.0.0.1:9/v1",
                           "+eval.judge.api_key=sk-inline-111111111"])
    with pytest.raises(ValueError, match=r"eval\.judge\.api_key.*\$OPENAI_API_KEY") as err:
        JudgeConfig.from_cfg(cfg.eval.judge)
    assert "sk-inline" not in str(err.value)
    backend = OmegaConf.create({"name": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "sk-x-222222"})
    with pytest.raises(ValueError, match=r"eval\.backend\.api_key"):
        make_backend(backend, "m", GenerationConfig())
    with pytest.raises(ValueError, match="unknown key"):
        client_config({"base_url": "http://x/v1", "model": "m", "timeout": 3})


def test_retry_after_beyond_backoff_max_is_honoured_up_to_the_ceiling():
    limited = (429, {"error": {"message": "slow down"}}, 0.0, {"Retry-After": "0.5"})
    with H.LoopbackServer(H.sequence(limited, OK)) as server:
        start = time.perf_counter()
        reply, usage = _chat(_cfg(server, backoff_max_s=0.05))
        assert time.perf_counter() - start >= 0.5 and reply.text == "fine"
    far = (503, {"error": {"message": "later"}}, 0.0, {"Retry-After": "3600"})
    with H.LoopbackServer(H.sequence(far, OK)) as server:
        start = time.perf_counter()
        reply, usage = _chat(_cfg(server, backoff_max_s=0.05, retry_after_max_s=0.3))
        waited = time.perf_counter() - start
    assert 0.3 <= waited < 5 and usage.retries == {"server_error": 1}


@pytest.mark.parametrize("usage", [{"prompt_tokens": "many"}, {"prompt_tokens": -3}, {"completion_tokens": 1.5},
                                   "twelve", [1, 2], {"prompt_tokens": {"n": 1}}])
def test_a_malformed_usage_is_a_bad_reply(usage):
    bad = (200, {**H.completion("fine"), "usage": usage}, 0.0)
    with H.LoopbackServer(H.sequence(bad, OK)) as server:
        reply, u = _chat(_cfg(server))
    assert reply.text == "fine" and u.retries == {"malformed_response": 1} and u.prompt_tokens == 5
    with H.LoopbackServer(H.sequence(bad)) as server:
        with pytest.raises(CallError) as err:
            _chat(_cfg(server, max_retries=1))
    assert err.value.reason == "malformed_response" and "usage" in err.value.detail


def _judge_script(body, headers):
    prompt = H.user_text(body)
    if "BOOM" in prompt:
        return 500, {"error": {"message": f"judge down {headers.get('Authorization')}"}}, 0.0
    if "EMPTY" in prompt:
        return 200, {**H.completion("x"), "choices": []}, 0.0
    if "NOTJSON" in prompt:
        return 200, b"<html>gateway</html>", 0.0
    if "SLOW" in prompt:
        return 200, H.completion('{"a": 3, "b": 3}'), 2.0
    return 200, H.completion('{"a": 4, "b": 5}'), 0.0


def test_judge_records_each_failed_item_and_goes_on(tmp_path, monkeypatch):
    from medsage.eval.judge import JudgeConfig, judge_items, summarize_judgements

    monkeypatch.setenv(KEY_ENV, SECRET)
    items = [{"id": str(i), "benchmark": "b", "question": q, "answer": "yes", "prediction": "p"}
             for i, q in enumerate(["fine", "BOOM", "EMPTY", "NOTJSON", "SLOW", "also fine"])]
    with H.LoopbackServer(_judge_script) as server:
        cfg = JudgeConfig(server.base_url, "judge", "{question}", ("a", "b"), api_key_env=KEY_ENV,
                          cache=str(tmp_path / "cache.jsonl"), timeout_s=0.5, max_retries=1)
        verdicts = judge_items(items, cfg)
        failed = {v["id"]: v["error"]["reason"] for v in verdicts if "error" in v}
        assert failed == {"1": "server_error", "2": "malformed_response", "3": "malformed_response", "4": "timeout"}
        assert [v["scores"] for v in verdicts if v["id"] in ("0", "5")] == [{"a": 4.0, "b": 5.0}] * 2
        assert SECRET not in json.dumps(verdicts)
        assert summarize_judgements(verdicts, ("a", "b"))["failed"] == 4
        asked = len(server.requests)
        assert asked == 2 + 4 * 2  # two answered, four tried twice (max_retries=1)
        judge_items(items, cfg)  # a rerun asks only the failed items again
        assert len(server.requests) - asked == 4 * 2
    assert len((tmp_path / "cache.jsonl").read_text().splitlines()) == 2


def test_judge_recipe_sets_timeout_and_retries():
    from medsage.eval.judge import JudgeConfig
    from medsage.recipes import compose

    cfg = compose("eval", ["eval.data_root=x", "eval.judge.base_url=http://127.0.0.1:9/v1",
                           "eval.judge.timeout_s=7", "eval.judge.max_retries=1"])
    judge = JudgeConfig.from_cfg(cfg.eval.judge)
    assert (judge.client().timeout_s, judge.client().max_retries) == (7.0, 1)


def test_openai_backend_retries_with_the_shared_policy(tmp_path):
    from PIL import Image

    from medsage.eval.backends.base import GenerationConfig
    from medsage.eval.backends.openai import OpenAIBackend
    from medsage.eval.prompting import ChatRequest, Part

    Image.new("RGB", (8, 8), (200, 10, 10)).save(tmp_path / "x.png")
    requests = [ChatRequest(str(i), (Part("image", str(tmp_path / "x.png")), Part("text", f"q{i}"))) for i in range(3)]
    with H.LoopbackServer(H.sequence((500, {"error": {"message": "x"}}, 0.0), OK)) as server:
        backend = OpenAIBackend(server.base_url, "m", GenerationConfig(max_new_tokens=9, seed=3), concurrency=2)
        backend.client.cfg.backoff_s = 0.01
        assert backend.generate(requests) == ["fine"] * 3
        assert backend.generate(requests[:1]) == ["fine"]  # a second batch, a second event loop
    assert len(server.requests) == 5 and backend.client.usage.retries == {"server_error": 1}
    body = server.requests[-1]
    assert body["max_tokens"] == 9 and body["seed"] == 3 and body["messages"][0]["content"][0]["type"] == "image_url"
