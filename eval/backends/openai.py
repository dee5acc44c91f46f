"""Any OpenAI-compatible chat endpoint (vLLM serve, llamafactory-cli api, a hosted model).

Images are sent inline as base64 PNG data URLs; requests of one batch run concurrently. The key is
read from the environment variable the recipe names and never written anywhere.
"""

from __future__ import annotations

import base64
import io
import os
from concurrent.futures import ThreadPoolExecutor

from medsage.eval.backends.base import GenerationConfig
from medsage.eval.prompting import ChatRequest


def image_data_url(path: str) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.open(path).convert("RGB").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def openai_messages(request: ChatRequest) -> list[dict]:
    content = [{"type": "image_url", "image_url": {"url": image_data_url(p.value)}} if p.kind == "image"
               else {"type": "text", "text": p.value} for p in request.parts]
    messages = [{"role": "user", "content": content}]
    if request.system:
        messages.insert(0, {"role": "system", "content": request.system})
    return messages


class OpenAIBackend:
    name = "openai"

    @classmethod
    def from_recipe(cls, cfg, model_path: str, generation: GenerationConfig) -> "OpenAIBackend":
        return cls(base_url=cfg.base_url, model=cfg.get("model") or model_path, generation=generation,
                   api_key_env=cfg.get("api_key_env", "OPENAI_API_KEY"), concurrency=int(cfg.get("concurrency", 4)),
                   timeout_s=float(cfg.get("timeout_s", 600)))

    def __init__(self, base_url: str, model: str, generation: GenerationConfig, api_key_env: str = "OPENAI_API_KEY",
                 concurrency: int = 4, timeout_s: float = 600):
        from openai import OpenAI

        # Local servers accept any key; a hosted endpoint's key comes from the environment only.
        self.client = OpenAI(base_url=base_url, api_key=os.environ.get(api_key_env) or "EMPTY", timeout=timeout_s,
                             max_retries=3)
        self.model, self.generation, self.concurrency = model, generation, concurrency

    def _one(self, request: ChatRequest) -> str:
        reply = self.client.chat.completions.create(
            model=self.model, messages=openai_messages(request), max_tokens=self.generation.max_new_tokens,
            temperature=self.generation.temperature, top_p=self.generation.top_p, seed=self.generation.seed)
        return reply.choices[0].message.content or ""

    def generate(self, requests: list[ChatRequest]) -> list[str]:
        with ThreadPoolExecutor(max_workers=max(1, self.concurrency)) as pool:
            return list(pool.map(self._one, requests))
