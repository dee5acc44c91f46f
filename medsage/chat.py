"""An async client for any OpenAI-compatible chat endpoint, built for synthesis at scale.

- bounded concurrency (one semaphore for every request of a run);
- retries with exponential backoff and jitter on 429, 5xx, timeouts, dropped connections and
  empty or malformed replies; other 4xx fail at once (retrying a bad request cannot help);
- a disk cache keyed by (model, prompt, image hashes, sampling settings, salt): a rerun or a resumed
  run answers from disk and makes no repeated call; entries are written atomically;
- usage accounting from each response's ``usage`` (tokens, and cost from per-1k prices).

The API key comes from the environment variable the recipe names and is only handed to the openai
client: it is never part of a cache key, a cache entry, a report or a log line.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import os
import random
from collections import Counter
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

from medsage.io import atomic_write_text


@dataclass
class ClientConfig:
    """Where to send requests and how hard to try."""

    base_url: str  # e.g. https://api.openai.com/v1 or http://127.0.0.1:8000/v1
    model: str
    api_key_env: str = "OPENAI_API_KEY"  # the NAME of the variable holding the key, never the key
    concurrency: int = 16  # requests in flight at once
    max_retries: int = 4  # extra attempts after the first, on retryable failures
    timeout_s: float = 120.0  # per request
    backoff_s: float = 1.0  # first backoff; doubles per retry, with jitter
    backoff_max_s: float = 30.0
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


class CallError(RuntimeError):
    """A request that failed for good; ``reason`` is a short stable code (it is counted)."""

    def __init__(self, reason: str, detail: str = "", retry_after: float | None = None):
        self.reason, self.detail, self.retry_after = reason, detail, retry_after
        super().__init__(f"{reason}: {detail}" if detail else reason)


@dataclass
class Usage:
    """What a run cost: network calls (retries included), cache hits, tokens and failures."""

    calls: int = 0  # HTTP requests sent, each retry counted
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    retries: Counter = field(default_factory=Counter)  # reason -> retried attempts
    failures: Counter = field(default_factory=Counter)  # reason -> requests given up

    def to_dict(self) -> dict:
        d = asdict(self)
        d["retries"], d["failures"] = dict(self.retries), dict(self.failures)
        d["cost"] = round(self.cost, 6)
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
    def crop(cls, path: str | Path, box: tuple[float, float, float, float]) -> "Image":
        """The pixel box ``(x1, y1, x2, y2)`` of an image, as PNG."""
        from PIL import Image as PILImage

        with PILImage.open(path) as img:
            region = img.convert("RGB").crop(tuple(int(round(v)) for v in box))
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


_RETRYABLE = ("rate_limited", "server_error", "timeout", "connection", "empty_content", "malformed_response")
# Failures that no other request can avoid either: a run stops on them instead of rejecting every unit.
FATAL = ("http_401", "http_403", "http_404")


class SynthClient:
    """Chat completions with concurrency, retries, cache and accounting. Use inside one event loop."""

    def __init__(self, cfg: ClientConfig):
        self.cfg = cfg
        self.usage = Usage()
        self._sem: asyncio.Semaphore | None = None
        self._client = None
        self._cache = Path(cfg.cache_dir) if cfg.cache_dir else None
        self._pending: dict[str, asyncio.Future] = {}  # key -> the call in flight for it

    def _openai(self):
        if self._client is None:
            from openai import AsyncOpenAI

            # A local server needs no key; the client still wants a non-empty string.
            key = os.environ.get(self.cfg.api_key_env) or "EMPTY"
            # Retries are ours (max_retries=0): each attempt is counted and its reason kept.
            self._client = AsyncOpenAI(base_url=self.cfg.base_url, api_key=key, max_retries=0,
                                       timeout=self.cfg.timeout_s)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    def cache_key(self, messages: list[Message], salt: str = "", model: str | None = None, **sampling) -> str:
        settings = {"temperature": self.cfg.temperature, "max_tokens": self.cfg.max_tokens, **sampling}
        blob = json.dumps({"model": model or self.cfg.model, "messages": [m.keyed() for m in messages],
                           "sampling": settings, "salt": salt}, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    def _cache_path(self, key: str) -> Path | None:
        return self._cache / key[:2] / f"{key}.json" if self._cache else None

    async def chat(self, messages: list[Message], *, salt: str = "", model: str | None = None, **sampling) -> Reply:
        """One completion's text. ``salt`` separates deliberate repeats (a regeneration attempt);
        ``model`` overrides the configured one (a verifier on the same endpoint)."""
        model = model or self.cfg.model
        key = self.cache_key(messages, salt, model, **sampling)
        path = self._cache_path(key)
        if path is not None and path.exists():
            try:
                entry = json.loads(path.read_text(encoding="utf-8"))
                self.usage.cache_hits += 1
                return Reply(entry["text"], entry["prompt_tokens"], entry["completion_tokens"], cached=True)
            except (OSError, ValueError, KeyError):
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
            async with self._sem:
                reply = await self._with_retries(model, [m.wire() for m in messages], sampling)
            if path is not None:  # written (and fsynced) off the event loop, so other requests keep flowing
                entry = json.dumps({"model": model, "text": reply.text, "prompt_tokens": reply.prompt_tokens,
                                    "completion_tokens": reply.completion_tokens})
                await asyncio.to_thread(atomic_write_text, path, entry)
            future.set_result(reply)
            return reply
        except BaseException as err:
            if isinstance(err, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(err)
                future.exception()  # mark it retrieved: nobody may be waiting on it
            raise
        finally:
            del self._pending[key]

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
                delay = self.cfg.backoff_s * 2 ** attempt * random.uniform(0.5, 1.0)  # jitter spreads a burst
                await asyncio.sleep(min(self.cfg.backoff_max_s, max(delay, err.retry_after or 0.0)))
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
            raise CallError(code, _short(err)) from None
        except ValueError as err:  # a body that is not JSON at all
            raise CallError("malformed_response", f"not JSON: {err}"[:200]) from None
        choices = data.get("choices") if isinstance(data, dict) else None
        first = choices[0] if isinstance(choices, list) and choices else None
        message = first.get("message") if isinstance(first, dict) else None
        if not isinstance(message, dict):
            raise CallError("malformed_response", "reply has no choices[0].message")
        text = message.get("content")
        if not isinstance(text, str) or not text.strip():
            raise CallError("empty_content", f"finish_reason={first.get('finish_reason')}")
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        p, c = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        self.usage.prompt_tokens += p
        self.usage.completion_tokens += c
        self.usage.cost += p / 1000 * self.cfg.price_prompt_per_1k + c / 1000 * self.cfg.price_completion_per_1k
        return Reply(text, p, c, cached=False)


def _retry_after(err) -> float | None:
    """The server's ``Retry-After`` (seconds) on a 429, when it sends one."""
    try:
        return float(err.response.headers.get("retry-after"))
    except (AttributeError, TypeError, ValueError):
        return None


def _short(err: Exception) -> str:
    return f"{type(err).__name__}: {err}"[:200]
