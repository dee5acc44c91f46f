"""The synthesis client against a SCRIPTED loopback server (synth_server.LoopbackServer): fault injection
(429, 500, timeout, malformed and empty replies, 4xx), retries, the disk cache, concurrency, usage and
the API key never reaching disk. The real-engine run is in test_synth_run.py."""

from __future__ import annotations

import asyncio

import pytest
import synth_server as H  # tests/helpers (pytest pythonpath)

from medsage.chat import CallError, ChatClient as SynthClient, ClientConfig, Image, Message


HELLO = [Message("system", "be brief"), Message("user", "hello")]


def _cfg(server, tmp_path=None, **kw) -> ClientConfig:
    base = dict(base_url=server.base_url, model="scripted", backoff_s=0.01, backoff_max_s=0.05, timeout_s=5,
                max_retries=3, cache_dir=str(tmp_path / "cache") if tmp_path else None)
    return ClientConfig(**{**base, **kw})



def _chat(cfg, messages=HELLO, **kw):
    async def go():
        client = SynthClient(cfg)
        try:
            return await client.chat(messages, **kw), client.usage
        finally:
            await client.aclose()

    return asyncio.run(go())


OK = (200, H.completion("fine", 5, 3), 0.0)


@pytest.mark.parametrize("fault,reason", [
    ((429, {"error": {"message": "slow down"}}, 0.0), "rate_limited"),
    ((500, {"error": {"message": "boom"}}, 0.0), "server_error"),
    ((503, {"error": {"message": "overloaded"}}, 0.0), "server_error"),
    ((200, b"this is not json", 0.0), "malformed_response"),
    ((200, {"unexpected": True}, 0.0), "malformed_response"),
    ((200, H.completion(""), 0.0), "empty_content"),
    ((200, H.completion(None), 0.0), "empty_content"),
])
def test_retries_then_succeeds(fault, reason):
    with H.LoopbackServer(H.sequence(fault, fault, OK)) as server:
        reply, usage = _chat(_cfg(server))
    assert reply.text == "fine" and not reply.cached
    assert usage.calls == 3 and len(server.requests) == 3
    assert usage.retries == {reason: 2} and not usage.failures
    assert (usage.prompt_tokens, usage.completion_tokens) == (5, 3)  # only the answered call counts


def test_gives_up_after_max_retries_with_the_reason():
    with H.LoopbackServer(H.sequence((500, {"error": {"message": "down"}}, 0.0))) as server:
        with pytest.raises(CallError) as err:
            _chat(_cfg(server, max_retries=2))
    assert err.value.reason == "server_error"
    assert len(server.requests) == 3  # the first try and two retries


def test_timeout_is_retried():
    with H.LoopbackServer(H.sequence((200, H.completion("late"), 1.5), OK)) as server:
        reply, usage = _chat(_cfg(server, timeout_s=0.4))
    assert reply.text == "fine"
    assert usage.retries == {"timeout": 1}


def test_retry_after_is_honoured():
    import time

    limited = (429, {"error": {"message": "slow down"}}, 0.0, {"Retry-After": "0.6"})
    with H.LoopbackServer(H.sequence(limited, OK)) as server:
        start = time.perf_counter()
        reply, usage = _chat(_cfg(server, backoff_s=0.01, backoff_max_s=5))
        waited = time.perf_counter() - start
    assert reply.text == "fine" and usage.retries == {"rate_limited": 1}
    assert waited >= 0.6  # the server's Retry-After, not the 10 ms backoff


def test_client_errors_are_not_retried():
    with H.LoopbackServer(H.sequence((400, {"error": {"message": "bad request"}}, 0.0), OK)) as server:
        with pytest.raises(CallError) as err:
            _chat(_cfg(server))
    assert err.value.reason == "http_400"
    assert len(server.requests) == 1


def test_disk_cache_answers_repeats_and_salt_separates(tmp_path):
    img = Image(b"\x89PNG fake bytes")
    msgs = [Message("user", "describe", (img,))]
    with H.LoopbackServer(H.sequence(OK)) as server:
        cfg = _cfg(server, tmp_path)
        first, _ = _chat(cfg, msgs)
        again, usage = _chat(cfg, [Message("user", "describe", (Image(b"\x89PNG fake bytes"),))])
        assert len(server.requests) == 1 and again.cached and usage.cache_hits == 1 and usage.calls == 0
        _chat(cfg, msgs, salt="attempt1")  # a regeneration asks again
        _chat(cfg, [Message("user", "describe", (Image(b"other bytes"),))])  # another image asks again
        assert len(server.requests) == 3
    # The image travels as a base64 data URL; the cache key holds its hash, not its bytes.
    part = server.requests[0]["messages"][0]["content"][0]
    assert part["image_url"]["url"].startswith("data:image/png;base64,")
    assert len(list((tmp_path / "cache").rglob("*.json"))) == 3


def test_concurrency_is_bounded():
    with H.LoopbackServer(H.sequence((200, H.completion("x"), 0.2))) as server:
        async def go():
            client = SynthClient(_cfg(server, concurrency=3))
            await asyncio.gather(*(client.chat([Message("user", f"q{i}")]) for i in range(9)))
            await client.aclose()

        asyncio.run(go())
    assert server.max_in_flight == 3


def test_identical_requests_in_flight_share_one_call():
    with H.LoopbackServer(H.sequence((200, H.completion("x"), 0.2))) as server:
        async def go():
            client = SynthClient(_cfg(server, concurrency=8))
            replies = await asyncio.gather(*(client.chat([Message("user", "same")]) for _ in range(5)))
            await client.aclose()
            return replies, client.usage

        replies, usage = asyncio.run(go())
    assert len(server.requests) == 1 and usage.calls == 1 and usage.cache_hits == 4
    assert {r.text for r in replies} == {"x"}


def test_usage_and_cost_from_responses():
    with H.LoopbackServer(H.sequence((200, H.completion("x", 1000, 500), 0.0))) as server:
        async def go():
            client = SynthClient(_cfg(server, price_prompt_per_1k=0.01, price_completion_per_1k=0.03))
            for i in range(4):
                await client.chat([Message("user", f"q{i}")])
            await client.aclose()
            return client.usage

        usage = asyncio.run(go())
    assert (usage.calls, usage.prompt_tokens, usage.completion_tokens) == (4, 4000, 2000)
    assert usage.cost == pytest.approx(4 * (0.01 + 0.015))


def test_api_key_from_env_never_on_disk(tmp_path, monkeypatch):
    secret = "sk-test-DO-NOT-WRITE-3141592653"
    monkeypatch.setenv("MEDSAGE_TEST_KEY", secret)
    with H.LoopbackServer(H.sequence(OK)) as server:
        _chat(_cfg(server, tmp_path, api_key_env="MEDSAGE_TEST_KEY"))
    assert server.headers[0].get("authorization") == f"Bearer {secret}"  # it is used...
    for f in tmp_path.rglob("*"):
        if f.is_file():
            assert secret not in f.read_text(errors="replace")  # ...and never written


def test_config_is_checked():
    with pytest.raises(ValueError, match="concurrency"):
        ClientConfig(base_url="http://127.0.0.1:1/v1", model="m", concurrency=0)
    with pytest.raises(ValueError, match="base_url"):
        ClientConfig(base_url="127.0.0.1:1", model="m")
