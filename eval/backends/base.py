"""The one interface every inference backend implements, and how a recipe picks one.

``generate(requests) -> list[str]``: one output text per request, in order; greedy unless the recipe
says otherwise. Batching, progress and resuming are the runner's job (``medsage.eval.run``), so a
backend is only the engine call. Backends: ``hf`` (transformers, CPU-capable, the default),
``vllm`` (offline batch on a GPU node), ``openai`` (any OpenAI-compatible endpoint).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from medsage.eval.prompting import ChatRequest


@dataclass(frozen=True)
class GenerationConfig:
    max_new_tokens: int = 1024
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int = 0


class Backend(Protocol):
    name: str

    def generate(self, requests: list[ChatRequest]) -> list[str]: ...


def make_backend(cfg, model_path: str, generation: GenerationConfig) -> Backend:
    """Build the backend a recipe's ``eval.backend`` node names (heavy imports happen inside)."""
    kind = cfg.name
    if kind == "hf":
        from medsage.eval.backends.hf import HFBackend

        return HFBackend(model_path, generation, device=cfg.get("device", "auto"), dtype=cfg.get("dtype", "auto"))
    if kind == "vllm":
        from medsage.eval.backends.vllm import VLLMBackend

        return VLLMBackend(model_path, generation, tensor_parallel_size=int(cfg.get("tensor_parallel_size", 1)),
                           max_model_len=int(cfg.get("max_model_len", 8192)),
                           limit_images=int(cfg.get("limit_images", 8)))
    if kind == "openai":
        from medsage.chat import refuse_keys
        from medsage.eval.backends.openai import OpenAIBackend

        refuse_keys(cfg, "eval.backend")

        return OpenAIBackend(base_url=cfg.base_url, model=cfg.get("model") or model_path, generation=generation,
                             api_key_env=cfg.get("api_key_env", "OPENAI_API_KEY"),
                             concurrency=int(cfg.get("concurrency", 4)), timeout_s=float(cfg.get("timeout_s", 600)),
                             max_retries=int(cfg.get("max_retries", 4)))
    raise ValueError(f"unknown eval backend {kind!r}; expected hf, vllm or openai")
