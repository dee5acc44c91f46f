"""vLLM offline batch backend (GPU node, its own environment: vLLM pins its own torch/transformers).

The whole batch goes to ``LLM.chat`` at once; images travel as base64 data URLs so no local-path
permission is needed.
"""

from __future__ import annotations

from medsage.eval.backends.base import GenerationConfig
from medsage.eval.backends.openai import openai_messages
from medsage.eval.prompting import ChatRequest


class VLLMBackend:
    name = "vllm"

    @classmethod
    def from_recipe(cls, cfg, model_path: str, generation: GenerationConfig) -> "VLLMBackend":
        return cls(model_path, generation, tensor_parallel_size=int(cfg.get("tensor_parallel_size", 1)),
                   max_model_len=int(cfg.get("max_model_len", 8192)), limit_images=int(cfg.get("limit_images", 8)))

    def __init__(self, model_path: str, generation: GenerationConfig, tensor_parallel_size: int = 1,
                 max_model_len: int = 8192, limit_images: int = 8):
        from vllm import LLM, SamplingParams

        self.llm = LLM(model=model_path, tensor_parallel_size=tensor_parallel_size, max_model_len=max_model_len,
                       limit_mm_per_prompt={"image": limit_images}, seed=generation.seed)
        self.params = SamplingParams(max_tokens=generation.max_new_tokens, temperature=generation.temperature,
                                     top_p=generation.top_p, seed=generation.seed)

    def generate(self, requests: list[ChatRequest]) -> list[str]:
        outputs = self.llm.chat([openai_messages(r) for r in requests], self.params, use_tqdm=False)
        return [o.outputs[0].text for o in outputs]
