"""The tiny Qwen2.5-VL: deterministic, loads with the standard classes, generates from image + text."""

from __future__ import annotations

import hashlib

import pytest


def digest(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_weights(tiny_model_dir, tmp_path):
    from medsage.launch.demo.tiny_model import build_tiny_model

    again = digest(build_tiny_model(tmp_path / "again", seed=0))
    assert again == digest(tiny_model_dir)
    other = digest(build_tiny_model(tmp_path / "other", seed=1))
    assert other["model.safetensors"] != again["model.safetensors"]
    assert other["tokenizer.json"] == again["tokenizer.json"]


def test_is_small_and_has_the_qwen2_vl_special_tokens(tiny_model_dir):
    from transformers import AutoProcessor

    from medsage.launch.demo.tiny_model import SPECIAL_TOKENS

    assert (tiny_model_dir / "model.safetensors").stat().st_size < 5_000_000
    tok = AutoProcessor.from_pretrained(tiny_model_dir).tokenizer
    for t in SPECIAL_TOKENS:
        ids = tok(t, add_special_tokens=False).input_ids
        assert len(ids) == 1, f"{t} is not a single token"
    assert tok.eos_token == "<|im_end|>"


def test_loads_and_generates_from_image_and_text(tiny_model_dir):
    import torch
    from PIL import Image
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_model_dir).eval()
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Is there a lesion?"}]}]
    text = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    assert text.endswith("<|im_start|>assistant\n")
    assert "<|vision_start|><|image_pad|><|vision_end|>Is there a lesion?" in text
    inputs = processor(images=[Image.new("RGB", (96, 80), (200, 40, 40))], text=[text], return_tensors="pt")
    assert inputs["image_grid_thw"].tolist() == [[1, 6, 6]]  # 96x80 resized to 84x84 -> 6x6 patches
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    new = out[0, inputs["input_ids"].shape[1]:]
    assert 1 <= len(new) <= 8


def test_cli_builds_a_model(tmp_path, capsys):
    from medsage.launch.cli import main

    assert main(["tiny-model", str(tmp_path / "m"), "--seed", "3"]) == 0
    assert "tiny Qwen2.5-VL written to" in capsys.readouterr().out
    assert (tmp_path / "m" / "chat_template.jinja").exists()
    assert (tmp_path / "m" / "processor_config.json").exists()


def test_a_tokenizer_corpus_shortens_its_text_and_json_gives_its_strings(tmp_path):
    import json

    from transformers import AutoTokenizer

    from medsage.launch.demo.tiny_model import build_tiny_model, corpus_strings

    row = "The region shows a small, rounded area markedly darker than the surrounding image."
    data = tmp_path / "sft.json"
    data.write_text(json.dumps([{"conversations": [{"from": "gpt", "value": row + "\n" + row}], "id": 7}]))
    assert corpus_strings(data) == ["gpt", row, row]  # every string value, a line each
    plain = AutoTokenizer.from_pretrained(build_tiny_model(tmp_path / "plain", hidden_size=32, text_layers=1))
    taught = AutoTokenizer.from_pretrained(build_tiny_model(tmp_path / "taught", hidden_size=32, text_layers=1,
                                                            corpus=corpus_strings(data) * 8))
    assert len(taught(row).input_ids) < 0.7 * len(plain(row).input_ids)
    assert taught.decode(taught(row).input_ids) == row
