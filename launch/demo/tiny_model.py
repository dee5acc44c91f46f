"""A random, few-MB Qwen2.5-VL built entirely offline, for tests and the demo.

It has the real architecture (``Qwen2_5_VLForConditionalGeneration``), a byte-level BPE tokenizer
with the Qwen2-VL special tokens, the Qwen2-VL image and video processors and a Qwen-style chat
template, so every engine that loads a Qwen2.5-VL checkpoint (LLaMA-Factory, verl, vLLM,
transformers) loads this one through the same code paths. Same seed, same bytes.
"""

from __future__ import annotations

import json
from pathlib import Path

# The special tokens of the Qwen2-VL tokenizer, in their released order.
SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]

# Our own Qwen-style template: ChatML turns, images and videos as vision spans in place.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' -%}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' or 'image' in part or 'image_url' in part -%}"
    "{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'video' or 'video' in part -%}{{ '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{%- elif 'text' in part -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)

# Text the BPE merges are learned from: the scaffold's tags and everyday radiology words, so that
# LVKC trajectories tokenise into a reasonable number of tokens.
_CORPUS = """\
<LOC></LOC><VISUAL></VISUAL><KNOWLEDGE></KNOWLEDGE><CON></CON><ANSWER></ANSWER><CHECK></CHECK>
{"box_2d": [315, 742, 785, 968], "label": "lesion"} {"point": [420, 215], "label": "region"}
The region of interest is the left upper quadrant near the spleen, in the right lower lobe of the lung.
A well defined hyperdense lesion with smooth margins is seen in the liver, kidney, bone and soft tissue.
Is there an abnormality in this image? Yes. No. Which organ is shown? What modality is used?
Options: A. Lung B. Liver C. Kidney D. Bone. The answer is A. The answer is B. The answer is C.
Computed tomography (CT), magnetic resonance imaging (MRI), X-ray, ultrasound, pathology slide.
Knowledge: a mass with irregular margins and heterogeneous enhancement suggests malignancy.
Conclusion: the findings are consistent with the answer supported by the visual evidence.
Self-check: visual grounding, visual analysis and knowledge consistency were reviewed and revised.
mediastinum abdomen pelvis chest heart brain nodule fluid effusion fracture tumor cyst normal
"""


def corpus_strings(path: str | Path) -> list[str]:
    """The text lines of ``path``: every string value of a JSON file (a LLaMA-Factory dataset, say), else its lines."""
    text = Path(path).read_text(encoding="utf-8")
    if Path(path).suffix != ".json":
        return text.splitlines()
    out: list[str] = []

    def walk(value) -> None:
        if isinstance(value, str):
            out.extend(value.splitlines())
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(json.loads(text))
    return out


def _train_tokenizer(vocab_size: int, corpus: list[str] | None = None):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=1, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=["<|endoftext|>"],
    )
    bpe.train_from_iterator(_CORPUS.splitlines() * 4 + list(corpus or []), trainer=trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return model["vocab"], merges


def build_tiny_model(out_dir: str | Path, *, seed: int = 0, vocab_size: int = 1024, hidden_size: int = 64,
                     text_layers: int = 2, vision_layers: int = 2, vision_hidden_size: int = 32,
                     grey_windows: bool = False, corpus: list[str] | None = None) -> Path:
    """Write a random Qwen2.5-VL checkpoint with processor and chat template to ``out_dir``; ``corpus`` adds
    text for the tokenizer's BPE merges (the miniature's: its SFT rows, so a trajectory is about half as many
    tokens)."""
    import torch
    from tokenizers import AddedToken
    from transformers import GenerationConfig, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2 import Qwen2Tokenizer
    from transformers.models.qwen2_5_vl import Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    vocab, merges = _train_tokenizer(vocab_size, corpus)
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                               model_max_length=4096)
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}

    heads = 4
    head_dim = hidden_size // heads
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
            num_hidden_layers=text_layers, num_attention_heads=heads, num_key_value_heads=2,
            max_position_embeddings=4096,
            # mrope splits head_dim/2 rotary frequencies over (temporal, height, width).
            rope_scaling={"type": "mrope", "mrope_section": _mrope_section(head_dim // 2), "rope_theta": 1e6},
            bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
        ),
        vision_config=dict(
            depth=vision_layers, hidden_size=vision_hidden_size, intermediate_size=2 * vision_hidden_size, num_heads=2, out_hidden_size=hidden_size,
            patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
            fullatt_block_indexes=[vision_layers - 1],
        ),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=ids["<|endoftext|>"], eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]],
        pad_token_id=ids["<|endoftext|>"], do_sample=False,
    )

    # Small pixel budgets keep the vision sequence short on CPU; patch/merge sizes match the tower.
    pixels = dict(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 64, patch_size=14, merge_size=2, temporal_patch_size=2)
    if grey_windows:
        # Qwen2.5-VL's patch embedding has no bias and RMSNorm follows, so with CLIP's near-equal channel means a
        # uniform patch maps to one direction whatever its grey: a random tower cannot tell a dense lesion from
        # tissue. Offsetting the three channels (like feeding three CT windows) makes grey level a direction.
        pixels.update(image_mean=[0.0, 0.5, 1.0], image_std=[0.5, 0.5, 0.5])
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(**pixels),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(**pixels),
        chat_template=CHAT_TEMPLATE,
    )
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def _mrope_section(rotary_half: int) -> list[int]:
    """Split the rotary frequencies over (t, h, w) the way Qwen2.5-VL does: 1/4, 3/8, 3/8."""
    t = rotary_half // 4
    h = (rotary_half - t) // 2
    return [t, h, rotary_half - t - h]
