"""The one client for OpenAI-compatible chat endpoints: synthesis, the GPT-score judge and the openai eval backend.

- bounded concurrency (one semaphore for every request of a client);
- one retry policy: exponential backoff with jitter on 429, 5xx, timeouts, dropped connections and
  empty or malformed replies (a bad ``usage`` included); a server's ``Retry-After`` is honoured even
  above ``backoff_max_s``, up to ``retry_after_max_s``; other 4xx fail at once;
- one timeout setting (``timeout_s``, per request);
- a disk cache keyed by (model, prompt, image hashes, sampling settings, salt): a rerun answers
  from disk and makes no repeated call; entries are written atomically;
- usage accounting: this client's calls, tokens and cost, and the tokens and cost of every reply it
  returned (fresh or cached), so a resumed run can report what its whole output cost;
- one redaction of secrets (``redact``): every error text this module raises has the key's value,
  ``Bearer ...`` and ``sk-...`` shapes removed, so no key reaches a log, a rejection or stderr.

The key comes from the environment variable the recipe names (``api_key_env``); a key written in a
recipe is refused (``client_config``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import math
import random
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import Mapping

from medsage.io import atomic_write_text
from medsage.secrets import api_key, redact, refuse_keys

@dataclass
class ClientConfig:
    """Where to send requests and how hard to try (the ``client`` node of a recipe)."""

    base_url: str  # e.g. https://api.openai.com/v1 or http://127.0.0.1:8000/v1
    model: str
    api_key_env: str = "OPENAI_API_KEY"  # the NAME of the variable holding the key, never the key
    concurrency: int = 16  # requests in flight at once
    max_retries: int = 4  # extra attempts after the first, on retryable failures
    timeout_s: float = 120.0  # per request
    backoff_s: float = 1.0  # first backoff; doubles per retry, with jitter
    backoff_max_s: float = 30.0  # longest backoff of our own
    retry_after_max_s: float = 300.0  # longest wait a server's Retry-After may ask for
    temperature: float = 0.7
    max_tokens: int = 512
    cache_dir: str | None = None  # None: no disk cache
    price_prompt_per_1k: float = 0.0  # currency per 1k prompt tokens, for the cost line of the report
    price_completion_per_1k: float = 0.0

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        if not str(self.base_url).startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http(s) URL, got {self.base_url!r}")
        if not all(math.isfinite(float(v)) and float(v) > 0 for v in (self.timeout_s, self.retry_after_max_s)):
            raise ValueError("timeout_s and retry_after_max_s must be finite and > 0")


def client_config(mapping: Mapping, where: str = "client", **overrides) -> ClientConfig:
    """A ``ClientConfig`` from a recipe node: a key written in the recipe and unknown fields are errors."""
    mapping = {**dict(mapping), **overrides}
    refuse_keys(mapping, where)
    known = {f.name for f in fields(ClientConfig)}
    unknown = sorted(set(mapping) - known)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; expected some of {sorted(known)}")
    return ClientConfig(**mapping)


class CallError(RuntimeError):
    """A request that failed for good; ``reason`` is a short stable code (it is counted). The detail is
    redacted here, once, so whoever keeps or prints it keeps no secret."""

    def __init__(self, reason: str, detail: str = "", retry_after: float | None = None):
        self.reason, self.detail, self.retry_after = reason, redact(detail)[:500], retry_after
        super().__init__(f"{reason}: {self.detail}" if self.detail else reason)


_RETRYABLE = ("rate_limited", "server_error", "timeout", "connection", "empty_content", "malformed_response")
# Failures that no other request can avoid either: a run stops on them instead of rejecting every unit.
FATAL = ("http_401", "http_403", "http_404")


@dataclass
class Usage:
    """What a client cost: network calls (retries included), cache hits, tokens and failures.

    ``output_*`` count every distinct reply the client returned, fresh or from the cache: what the
    run's output cost in all, across the runs that filled the cache."""

    calls: int = 0  # HTTP requests sent, each retry counted
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    retries: Counter = field(default_factory=Counter)  # reason -> retried attempts
    failures: Counter = field(default_factory=Counter)  # reason -> requests given up
    output_replies: int = 0
    output_prompt_tokens: int = 0
    output_completion_tokens: int = 0
    output_cost: float = 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["retries"], d["failures"] = dict(self.retries), dict(self.failures)
        d["cost"], d["output_cost"] = round(self.cost, 6), round(self.output_cost, 6)
        return d


@dataclass(frozen=True)
class Reply:
    text: str
    prompt_tokens: int
    completion_tokens: int
    cached: bool


@dataclass(frozen=True)
class Image:
    """Image bytes to send, with the hash that stands for them in the cache key."""

    data: bytes
    mime: str = "image/png"

    @cached_property  # hashed once, however many cache keys the image enters
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def data_url(self) -> str:
        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode()}"

    @classmethod
    def from_path(cls, path: str | Path) -> "Image":
        path = Path(path)
        mime = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif", ".bmp": "image/bmp"}
        return cls(path.read_bytes(), mime.get(path.suffix.lower(), "image/png"))

    @classmethod
    def crop(cls, path: str | Path, box: tuple[float, float, float, float] | None = None) -> "Image":
        """The pixel box ``(x1, y1, x2, y2)`` of an image (the whole image for None), as RGB PNG."""
        from medsage.images import open_image

        with open_image(path) as img:
            region = img.convert("RGB")
            if box is not None:
                region = region.crop(tuple(int(round(v)) for v in box))
            buf = io.BytesIO()
            region.save(buf, format="PNG")
        return cls(buf.getvalue(), "image/png")


@dataclass(frozen=True)
class Message:
    """One chat message: text, with images placed before the text (the order Qwen-VL is trained on)."""

    role: str
    text: str
    images: tuple[Image, ...] = ()

    def wire(self) -> dict:
        if not self.images:
            return {"role": self.role, "content": self.text}
        parts = [{"type": "image_url", "image_url": {"url": im.data_url()}} for im in self.images]
        return {"role": self.role, "content": [*parts, {"type": "text", "text": self.text}]}

    def keyed(self) -> dict:
        """The message as it enters the cache key: images by hash, not by bytes."""
        return {"role": self.role, "text": self.text, "images": [im.sha256 for im in self.images]}


class ChatClient:
    """Chat completions with concurrency, retries, cache and accounting. Use inside one event loop at a
    time; ``aclose`` (or ``run``, which calls it) lets a later ``asyncio.run`` use the client again."""

    def __init__(self, cfg: ClientConfig):
        self.cfg = cfg
        self.usage = Usage()
        self._key = api_key(cfg.api_key_env)  # read now, so even an early error is redacted
        self._sem: asyncio.Semaphore | None = None
        self._client = None
        self._cache = Path(cfg.cache_dir) if cfg.cache_dir else None
        self._pending: dict[str, asyncio.Future] = {}  # key -> the call in flight for it
        self._counted: set[str] = set()  # cache keys whose reply is in the output_* counts

    def _openai(self):
        if self._client is None:
            from openai import AsyncOpenAI

            # Retries are ours (max_retries=0): each attempt is counted and its reason kept.
            self._client = AsyncOpenAI(base_url=self.cfg.base_url, api_key=self._key, max_retries=0,
                                       timeout=self.cfg.timeout_s)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
        self._client, self._sem = None, None  # both belong to the event loop that is ending

    def run(self, coro_fn):
        """``asyncio.run(coro_fn(self))``, closing the connections before the loop ends (sync callers)."""
        async def go():
            try:
                return await coro_fn(self)
            finally:
                await self.aclose()

        return asyncio.run(go())

    def cache_key(self, messages: list, salt: str = "", model: str | None = None, **sampling) -> str:
        settings = {"temperature": self.cfg.temperature, "max_tokens": self.cfg.max_tokens, **sampling}
        keyed = [m.keyed() if isinstance(m, Message) else m for m in messages]
        blob = json.dumps({"model": model or self.cfg.model, "messages": keyed, "sampling": settings, "salt": salt},
                          sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    def _cache_path(self, key: str) -> Path | None:
        return self._cache / key[:2] / f"{key}.json" if self._cache else None

    def _account(self, key: str, reply: Reply) -> Reply:
        if key not in self._counted:
            self._counted.add(key)
            u = self.usage
            u.output_replies += 1
            u.output_prompt_tokens += reply.prompt_tokens
            u.output_completion_tokens += reply.completion_tokens
            u.output_cost += self._price(reply.prompt_tokens, reply.completion_tokens)
        return reply

    def _price(self, p: int, c: int) -> float:
        return p / 1000 * self.cfg.price_prompt_per_1k + c / 1000 * self.cfg.price_completion_per_1k

    async def chat(self, messages: list, *, salt: str = "", model: str | None = None, **sampling) -> Reply:
        """One completion's text. ``messages`` are ``Message``s (or wire-format dicts, sent as they are);
        ``salt`` separates deliberate repeats (a regeneration attempt); ``model`` overrides the
        configured one (a verifier on the same endpoint); ``sampling`` overrides temperature etc."""
        model = model or self.cfg.model
        key = self.cache_key(messages, salt, model, **sampling)
        path = self._cache_path(key)
        if path is not None and path.exists():
            try:
                entry = json.loads(path.read_text(encoding="utf-8"))
                reply = Reply(entry["text"], int(entry["prompt_tokens"]), int(entry["completion_tokens"]), cached=True)
                self.usage.cache_hits += 1
                return self._account(key, reply)
            except (OSError, ValueError, KeyError, TypeError):
                pass  # a damaged entry is simply asked again (and rewritten)
        if key in self._pending:  # the same request is already on the wire (loc/vis shared by templates)
            reply = await asyncio.shield(self._pending[key])
            self.usage.cache_hits += 1
            return Reply(reply.text, reply.prompt_tokens, reply.completion_tokens, cached=True)
        future = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            if self._sem is None:
                self._sem = asyncio.Semaphore(self.cfg.concurrency)
            wire = [m.wire() if isinstance(m, Message) else m for m in messages]
            async with self._sem:
                reply = await self._with_retries(model, wire, sampling)
            if path is not None:  # written (and fsynced) off the event loop, so other requests keep flowing
                entry = json.dumps({"model": model, "text": reply.text, "prompt_tokens": reply.prompt_tokens,
                                    "completion_tokens": reply.completion_tokens})
                await asyncio.to_thread(atomic_write_text, path, entry)
            future.set_result(reply)
            return self._account(key, reply)
        except BaseException as err:
            if isinstance(err, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(err)
                future.exception()  # mark it retrieved: nobody may be waiting on it
            raise
        finally:
            del self._pending[key]

    def backoff(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before retry ``attempt`` (0-based): our jittered backoff, or the server's
        Retry-After when it asks for longer (capped at ``retry_after_max_s``)."""
        ours = min(self.cfg.backoff_max_s, self.cfg.backoff_s * 2 ** attempt * random.uniform(0.5, 1.0))
        return min(self.cfg.retry_after_max_s, max(ours, retry_after or 0.0))

    async def _with_retries(self, model: str, wire: list[dict], sampling: dict) -> Reply:
        attempt = 0
        while True:
            try:
                return await self._once(model, wire, sampling)
            except CallError as err:
                if err.reason not in _RETRYABLE or attempt >= self.cfg.max_retries:
                    self.usage.failures[err.reason] += 1
                    raise
                self.usage.retries[err.reason] += 1
                await asyncio.sleep(self.backoff(attempt, err.retry_after))
                attempt += 1

    async def _once(self, model: str, wire: list[dict], sampling: dict) -> Reply:
        import httpx2
        import openai

        body = {"model": model, "messages": wire, "temperature": self.cfg.temperature,
                "max_tokens": self.cfg.max_tokens, **sampling}
        self.usage.calls += 1
        try:
            # The client's documented raw ``post``: its auth, timeouts and typed errors, without the
            # typed request transform and response model (most of its per-request CPU; see bench/).
            raw = await self._openai().post("/chat/completions", cast_to=httpx2.Response, body=body)
            data = json.loads(raw.content)
        except openai.RateLimitError as err:
            raise CallError("rate_limited", _short(err), _retry_after(err)) from None
        except openai.APITimeoutError as err:  # subclass of APIConnectionError: test it first
            raise CallError("timeout", _short(err)) from None
        except openai.APIConnectionError as err:
            raise CallError("connection", _short(err)) from None
        except openai.AuthenticationError:  # its message may quote part of the key: keep none of it
            raise CallError("http_401", f"authentication failed; check the key in ${self.cfg.api_key_env}") from None
        except openai.PermissionDeniedError:
            raise CallError("http_403", f"permission denied for the key in ${self.cfg.api_key_env}") from None
        except openai.APIStatusError as err:
            code = "server_error" if err.status_code >= 500 else f"http_{err.status_code}"
            raise CallError(code, _short(err), _retry_after(err)) from None
        except ValueError as err:  # a body that is not JSON at all
            raise CallError("malformed_response", f"not JSON: {err}"[:200]) from None
        return self._parse(data)

    def _parse(self, data) -> Reply:
        choices = data.get("choices") if isinstance(data, dict) else None
        first = choices[0] if isinstance(choices, list) and choices else None
        message = first.get("message") if isinstance(first, dict) else None
        if not isinstance(message, dict):
            raise CallError("malformed_response", "reply has no choices[0].message")
        text = message.get("content")
        if not isinstance(text, str) or not text.strip():
            raise CallError("empty_content", f"finish_reason={first.get('finish_reason')}")
        usage = data.get("usage")
        if usage is None:  # some local servers send none: the call is counted, its tokens are unknown
            usage = {}
        if not isinstance(usage, dict):
            raise CallError("malformed_response", f"usage is {type(usage).__name__}, not an object")
        counts = []
        for name in ("prompt_tokens", "completion_tokens"):
            v = usage.get(name, 0)
            if v is None:
                v = 0
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise CallError("malformed_response", f"usage.{name} is {v!r}, not a count")
            counts.append(v)
        p, c = counts
        self.usage.prompt_tokens += p
        self.usage.completion_tokens += c
        self.usage.cost += self._price(p, c)
        return Reply(text, p, c, cached=False)


async def gather_or_cancel(coros) -> list:
    """``asyncio.gather`` that cancels (and awaits) every other task when one raises."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def _retry_after(err) -> float | None:
    """The server's ``Retry-After`` in seconds (a number or an HTTP date), when it sends one."""
    try:
        value = err.response.headers.get("retry-after")
    except AttributeError:
        return None
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            import datetime as dt

            seconds = (parsedate_to_datetime(value) - dt.datetime.now(dt.timezone.utc)).total_seconds()
        except (TypeError, ValueError, OverflowError):
            return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _short(err: Exception) -> str:
    return redact(f"{type(err).__name__}: {err}")[:300]
