"""Transformers backend: batched greedy generation with the model's own processor (CPU-capable)."""

from __future__ import annotations

from medsage.eval.backends.base import GenerationConfig, pixel_bounds
from medsage.eval.prompting import ChatRequest
from medsage.launch.preflight import AUTO, flash_attn_imports, resolve_attention


def chat_messages(request: ChatRequest, image_key: str = "image") -> list[dict]:
    """Messages in the processor's chat-template form; images as placeholders in place."""
    content = [{"type": "image"} if p.kind == "image" else {"type": "text", "text": p.value} for p in request.parts]
    messages = [{"role": "user", "content": content}]
    messages += [{"role": role, "content": [{"type": "text", "text": text}]} for role, text in request.turns]
    if request.system:
        messages.insert(0, {"role": "system", "content": [{"type": "text", "text": request.system}]})
    return messages


class HFBackend:
    name = "hf"
    continues_replies = True  # a request's reply_prefix is written after the generation prompt and continued

    @classmethod
    def from_recipe(cls, cfg, model_path: str, generation: GenerationConfig) -> "HFBackend":
        return cls(model_path, generation, device=cfg.get("device", "auto"), dtype=cfg.get("dtype", "auto"),
                   attn_implementation=cfg.get("attn_implementation", AUTO), min_pixels=cfg.get("image_min_pixels"),
                   max_pixels=cfg.get("image_max_pixels"))

    def __init__(self, model_path: str, generation: GenerationConfig, device: str = "auto", dtype: str = "auto",
                 attn_implementation: str = AUTO, min_pixels: int | None = None, max_pixels: int | None = None):
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.generation = generation
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        torch_dtype = {"auto": torch.bfloat16 if self.device.startswith("cuda") else torch.float32,
                       "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
        self.attn_implementation = self.attention(attn_implementation, self.device)
        # The model recipe's pixel bounds, as SFT and RL resize to them: an image the model was trained to see as
        # 1,280 vision tokens is not shown to it as 16,000 (the processor's own default bound) at evaluation.
        pixels = pixel_bounds(min_pixels, max_pixels)
        self.processor = AutoProcessor.from_pretrained(model_path, **pixels)
        self.processor.tokenizer.padding_side = "left"  # decoder-only batching pads on the left
        self.model = AutoModelForImageTextToText.from_pretrained(
            model_path, dtype=torch_dtype, attn_implementation=self.attn_implementation).to(self.device).eval()

    @staticmethod
    def attention(requested: str, device: str) -> str:
        """``requested`` (model.attn_implementation) for a model in this process on ``device``: auto is
        flash_attention_2 on CUDA where flash_attn imports here, else sdpa (flash-attn has no CPU kernels)."""
        return resolve_attention(requested, flash_attn=device.startswith("cuda") and flash_attn_imports())

    def generate(self, requests: list[ChatRequest]) -> list[str]:
        import torch
        from PIL import Image

        texts = [self.processor.apply_chat_template(chat_messages(r), add_generation_prompt=True, tokenize=False)
                 + r.reply_prefix for r in requests]
        images = [Image.open(p).convert("RGB") for r in requests for p in r.images]
        inputs = self.processor(text=texts, images=images or None, padding=True, return_tensors="pt").to(self.device)
        greedy = self.generation.temperature <= 0
        sampling = {} if greedy else {"temperature": self.generation.temperature, "top_p": self.generation.top_p}
        if not greedy:
            torch.manual_seed(self.generation.seed)
        with torch.no_grad():
            out = self.model.generate(**inputs, max_new_tokens=self.generation.max_new_tokens, do_sample=not greedy,
                                      **sampling)
        return self.processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
