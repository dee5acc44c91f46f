"""The one interface every inference backend implements, and how a recipe picks one.

``generate(requests) -> list[str]``: one output text per request, in order; greedy unless the recipe
says otherwise. Batching, progress and resuming are the runner's job (``medsage.eval.run``), so a
backend is only the engine call. Backends: ``hf`` (transformers, CPU-capable, the default),
``vllm`` (offline batch on a GPU node), ``openai`` (any OpenAI-compatible endpoint), registered like any plugin (``medsage.eval_backends``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from medsage.eval.prompting import ChatRequest


@dataclass
class GenerationConfig:
    max_new_tokens: int = 1024
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int = 0


class Backend(Protocol):
    name: str

    @classmethod
    def from_recipe(cls, cfg, model_path: str, generation: GenerationConfig) -> "Backend": ...

    def generate(self, requests: list[ChatRequest]) -> list[str]: ...


def pixel_bounds(min_pixels: int | None, max_pixels: int | None) -> dict[str, int]:
    """The model recipe's image pixel bounds as the HF processor's keywords (what SFT and RL resize images to);
    the bounds left null are the processor's own."""
    return {k: int(v) for k, v in (("min_pixels", min_pixels), ("max_pixels", max_pixels)) if v is not None}


def make_backend(cfg, model_path: str, generation: GenerationConfig) -> Backend:
    """Build the backend a recipe's ``eval.backend`` node names: an entry point of ``medsage.eval_backends``
    (a class with ``from_recipe(cfg, model_path, generation)``); only the chosen backend's module is imported."""
    from medsage.registry import EVAL_BACKENDS

    return EVAL_BACKENDS.get(str(cfg.name)).from_recipe(cfg, model_path, generation)
