"""Any OpenAI-compatible chat endpoint (vLLM serve, llamafactory-cli api, a hosted model).

Images are sent inline as base64 PNG data URLs; requests of one batch run concurrently. The key is
read from the environment variable the recipe names and never written anywhere.
"""

from __future__ import annotations

import base64
import io

from medsage.chat import ChatClient, ClientConfig, gather_or_cancel, refuse_keys
from medsage.eval.backends.base import GenerationConfig
from medsage.eval.prompting import ChatRequest


def image_data_url(path: str) -> str:
    from medsage.images import open_image

    buf = io.BytesIO()
    with open_image(path) as img:
        img.convert("RGB").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def openai_messages(request: ChatRequest) -> list[dict]:
    content = [{"type": "image_url", "image_url": {"url": image_data_url(p.value)}} if p.kind == "image"
               else {"type": "text", "text": p.value} for p in request.parts]
    messages = [{"role": "user", "content": content}]
    messages += [{"role": role, "content": text} for role, text in request.turns]
    if request.system:
        messages.insert(0, {"role": "system", "content": request.system})
    if request.reply_prefix:  # the reply's start, continued (vLLM's chat(continue_final_message=True))
        messages.append({"role": "assistant", "content": request.reply_prefix})
    return messages


class OpenAIBackend:
    """Generation through ``medsage.chat``: the retry policy, timeout and redaction of synthesis and the judge."""

    name = "openai"
    # The Chat Completions API has no standard way to continue a reply's start (the retry's opened <CHECK>)
    continues_replies = False

    @classmethod
    def from_recipe(cls, cfg, model_path: str, generation: GenerationConfig) -> "OpenAIBackend":
        refuse_keys(cfg, "eval.backend")
        return cls(base_url=cfg.base_url, model=cfg.get("model") or model_path, generation=generation,
                   api_key_env=cfg.get("api_key_env", "OPENAI_API_KEY"), concurrency=int(cfg.get("concurrency", 4)),
                   timeout_s=float(cfg.get("timeout_s", 600)), max_retries=int(cfg.get("max_retries", 4)))

    def __init__(self, base_url: str, model: str, generation: GenerationConfig, api_key_env: str = "OPENAI_API_KEY",
                 concurrency: int = 4, timeout_s: float = 600, max_retries: int = 4):
        # Local servers accept any key; a hosted endpoint's key comes from the environment only.
        self.client = ChatClient(ClientConfig(base_url=base_url, model=model, api_key_env=api_key_env,
                                              concurrency=concurrency, timeout_s=timeout_s, max_retries=max_retries,
                                              temperature=generation.temperature,
                                              max_tokens=generation.max_new_tokens))
        self.model, self.generation, self.concurrency = model, generation, concurrency

    def generate(self, requests: list[ChatRequest]) -> list[str]:
        g = self.generation

        async def batch(client: ChatClient) -> list[str]:
            replies = await gather_or_cancel(client.chat(openai_messages(r), top_p=g.top_p, seed=g.seed)
                                             for r in requests)
            return [r.text for r in replies]

        return self.client.run(batch)
