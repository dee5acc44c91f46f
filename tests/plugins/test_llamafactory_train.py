"""The checkpoint-load check of medsage's LLaMA-Factory training process (plugins/engines/llamafactory_train.py).

The real resume through LLaMA-Factory is tests/launch/test_sft_train.py (slow); here the check itself, on the
tiny Qwen2.5-VL saved by transformers as the Trainer saves a checkpoint.
"""

from __future__ import annotations

import json

import pytest

from medsage.launch.sft_runs import SftError, check_resumed_weights
from medsage.plugins.engines.llamafactory_train import CheckpointLoadError, restore_weights


@pytest.fixture
def model_and_checkpoint(tiny_model_dir, tmp_path):
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)  # a "trained" model, as at a checkpoint
    checkpoint = tmp_path / "checkpoint-3"
    model.save_pretrained(checkpoint)  # transformers 5 writes the original key names (model.layers.*)
    return model, checkpoint


def test_the_trainers_own_load_leaves_the_language_model_and_the_check_restores_it(model_and_checkpoint):
    import torch
    from safetensors.torch import load_file

    model, checkpoint = model_and_checkpoint
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()  # the weights the resumed process starts from are not the checkpoint's
    # What Trainer._load_from_checkpoint does in transformers 5.5.4: the file as it is, strict=False.
    result = model.load_state_dict(load_file(str(checkpoint / "model.safetensors")), strict=False)
    assert any(k.startswith("model.language_model.") for k in result.missing_keys)

    record = restore_weights(model, str(checkpoint))
    assert record["left_by_trainer"] > 0
    assert record["tensors"] == len(saved)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())


def test_a_checkpoint_that_does_not_load_cleanly_stops_training(model_and_checkpoint):
    from safetensors.torch import load_file, save_file

    model, checkpoint = model_and_checkpoint
    weights = load_file(str(checkpoint / "model.safetensors"))
    dropped = next(k for k in weights if "layers.0.mlp" in k)
    save_file({k: v for k, v in weights.items() if k != dropped}, str(checkpoint / "model.safetensors"),
              metadata={"format": "pt"})
    with pytest.raises(CheckpointLoadError, match="does not load cleanly .*missing_keys"):
        restore_weights(model, str(checkpoint))


def test_a_resumed_run_without_the_trainers_check_is_not_finished(tmp_path):
    checkpoint = tmp_path / "checkpoint-3"
    with pytest.raises(SftError, match="did not confirm that it loaded that checkpoint's weights"):
        check_resumed_weights(tmp_path, checkpoint)
    (tmp_path / "medsage_resume_check.json").write_text(json.dumps({"checkpoint": str(tmp_path / "checkpoint-1")}))
    with pytest.raises(SftError, match="resumed from checkpoint-3"):  # an earlier attempt's check
        check_resumed_weights(tmp_path, checkpoint)
    (tmp_path / "medsage_resume_check.json").write_text(json.dumps({"checkpoint": str(checkpoint), "tensors": 57}))
    assert check_resumed_weights(tmp_path, checkpoint)["tensors"] == 57
