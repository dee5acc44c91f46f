"""A real LLaMA-Factory SFT of the tiny model on CPU; the checkpoint then loads and generates."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_llamafactory_trains_the_tiny_model_and_the_checkpoint_generates(tiny_model_dir, tmp_path, demo_samples):
    from medsage.data_pipeline.writers import write_llava_sft
    from medsage.launch.demo import generate, run_llamafactory_train, write_lf_config

    data_dir = tmp_path / "demo"
    write_llava_sft(demo_samples, data_dir, name="lvkc")
    rows = json.loads((data_dir / "lvkc.json").read_text())
    assert len(rows) == len(demo_samples)
    assert all(r["conversations"][0]["value"].count("<image>") == len(r["images"]) for r in rows)

    out = tmp_path / "sft"
    config = write_lf_config(tiny_model_dir, data_dir, "lvkc", out, epochs=4)
    losses = run_llamafactory_train(config, tmp_path / "sft.yaml", tmp_path / "sft.log")
    assert len(losses) == 4 * len(demo_samples) // config["per_device_train_batch_size"]
    assert losses[-1] < losses[0]

    reply = generate(out, demo_samples[0].images[0], demo_samples[0].prompt_text(), max_new_tokens=16)
    assert isinstance(reply, str) and reply
