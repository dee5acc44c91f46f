"""vLLM offline batch backend (GPU node, its own environment: vLLM pins its own torch/transformers).

The whole batch goes to ``LLM.chat`` at once; images travel as base64 data URLs so no local-path
permission is needed. One model copy spans ``tensor_parallel_size`` GPUs; left null it is the most of the
node's GPUs (``cluster.gpus_per_node``) that vLLM can split the model over (``tensor_parallel_size``).
"""

from __future__ import annotations

from medsage.eval.backends.base import GenerationConfig, pixel_bounds
from medsage.eval.backends.openai import openai_messages
from medsage.eval.prompting import ChatRequest


def tensor_parallel_size(model_path: str, gpus: int) -> int:
    """The most of ``gpus`` that vLLM can shard ``model_path`` over: it splits every attention layer's heads evenly
    over the ranks (the language model's and the vision tower's), key/value heads too, or replicates them when
    there are fewer than ranks. Qwen2.5-VL-7B (28 heads, 4 key/value heads, 16 vision heads) on 8 GPUs: 4."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_path)
    text = config.get_text_config()
    heads = [text.num_attention_heads]
    kv_heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
    vision = getattr(config, "vision_config", None)
    if vision is not None:
        heads.append(getattr(vision, "num_heads", None) or vision.num_attention_heads)
    for tp in range(max(1, gpus), 1, -1):
        if all(h % tp == 0 for h in heads) and (kv_heads % tp == 0 or tp % kv_heads == 0):
            return tp
    return 1


class VLLMBackend:
    name = "vllm"
    continues_replies = True  # a reply_prefix is the last assistant message, continued

    @classmethod
    def from_recipe(cls, cfg, model_path: str, generation: GenerationConfig) -> VLLMBackend:
        tp = cfg.tensor_parallel_size or tensor_parallel_size(model_path, int(cfg.node_gpus))
        return cls(model_path, generation, tensor_parallel_size=int(tp), max_model_len=int(cfg.max_model_len),
                   limit_images=int(cfg.limit_images), min_pixels=cfg.get("image_min_pixels"),
                   max_pixels=cfg.get("image_max_pixels"))

    def __init__(self, model_path: str, generation: GenerationConfig, tensor_parallel_size: int = 1,
                 max_model_len: int = 8192, limit_images: int = 8, min_pixels: int | None = None,
                 max_pixels: int | None = None):
        from vllm import LLM, SamplingParams

        # the model recipe's pixel bounds, as SFT and RL resize to them (the HF processor's keywords)
        pixels = pixel_bounds(min_pixels, max_pixels)
        self.llm = LLM(model=model_path, tensor_parallel_size=tensor_parallel_size, max_model_len=max_model_len,
                       limit_mm_per_prompt={"image": limit_images}, seed=generation.seed,
                       mm_processor_kwargs=pixels or None)
        self.params = SamplingParams(max_tokens=generation.max_new_tokens, temperature=generation.temperature,
                                     top_p=generation.top_p, seed=generation.seed)

    def generate(self, requests: list[ChatRequest]) -> list[str]:
        prefixed = [bool(r.reply_prefix) for r in requests]
        if any(prefixed) and not all(prefixed):
            raise ValueError("a vLLM batch either continues every reply's start or none (the runner batches them apart)")
        outputs = self.llm.chat([openai_messages(r) for r in requests], self.params, use_tqdm=False,
                                add_generation_prompt=not any(prefixed), continue_final_message=any(prefixed))
        return [o.outputs[0].text for o in outputs]
