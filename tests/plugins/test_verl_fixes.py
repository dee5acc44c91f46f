"""medsage's fixes to verl 0.9.1 that GPU runs need too (issue: GRPO runs for real), without a trainer.

The training run itself (tests/plugins/test_rl_cpu_train.py) covers the frozen vision tower and the
legacy trainer end to end; these check each fix at the verl call it repairs.
"""

from __future__ import annotations

import pickle

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("verl")


def _equal_length_batch():
    from tensordict import TensorDict

    b, prompt, response = 2, 5, 3
    seq = prompt + response
    pos = torch.arange(seq).expand(b, 4, seq).clone()  # mRoPE: (batch, 4, seq)
    return TensorDict({
        "input_ids": torch.randint(0, 50, (b, seq)), "attention_mask": torch.ones(b, seq, dtype=torch.long),
        "response_mask": torch.ones(b, response, dtype=torch.long), "position_ids": pos,
    }, batch_size=[b]), pos


def test_equal_length_vlm_batches_pack_with_ragged_positions():
    # verl packs the batch, pickles it to a worker, forces _ragged_idx=2 there and reads the positions back.
    from verl.trainer.ppo import ray_trainer
    from verl.utils import tensordict_utils as tu

    from medsage.plugins.self_check.verl_plugin import install_trainer_hooks

    install_trainer_hooks()  # as medsage's agent-loop manager does in a medsage run

    data, pos = _equal_length_batch()
    packed = pickle.loads(pickle.dumps(ray_trainer.left_right_2_no_padding(data)))
    tu.maybe_fix_3d_position_ids(packed)
    rows = packed["position_ids"].unbind()
    assert [tuple(r.shape) for r in rows] == [(4, 8), (4, 8)]
    assert all(torch.equal(r, p) for r, p in zip(rows, pos))


def test_verl_unpatched_packing_breaks_on_equal_lengths():
    # The failure the fix is for, shown with verl's own function (so the test above can fail).
    from verl.utils import tensordict_utils as tu
    from verl.workers.utils.padding import left_right_2_no_padding

    data, _ = _equal_length_batch()
    packed = pickle.loads(pickle.dumps(left_right_2_no_padding(data)))
    tu.maybe_fix_3d_position_ids(packed)
    # rows of (8, 4) instead of (4, 8): the model's rotary embedding then fails in update_actor
    assert [tuple(r.shape) for r in packed["position_ids"].unbind()] != [(4, 8), (4, 8)]


def test_tensordict_is_what_the_legacy_trainer_needs():
    # verl's DataProto.to_tensordict (the legacy trainer's path) asserts tensordict >= 0.10.
    from verl import DataProto

    batch = DataProto.from_dict(tensors={"x": torch.zeros(2, 3)}, non_tensors={"uid": ["a", "b"]})
    td = batch.to_tensordict()
    assert td["x"].shape == (2, 3)


def test_vision_tower_parameters_are_found_and_frozen(tiny_model_dir):
    from transformers import Qwen2_5_VLForConditionalGeneration

    from medsage.plugins.engines.verl_engine import freeze_vision_tower, vision_parameter_names

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_model_dir)
    names = vision_parameter_names(model)
    assert names and all(".visual." in f".{n}" for n in names)
    assert freeze_vision_tower(model) == len(names)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and not trainable & set(names)
    assert any("language_model" in n or "lm_head" in n for n in trainable)


def test_vision_tokens_are_banned_from_sampling(tiny_model_dir):
    from transformers import AutoTokenizer

    from medsage.plugins.self_check.loop import VISION_TOKENS, vision_token_ids

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = vision_token_ids(tok)
    assert sorted(ids) == sorted(tok.convert_tokens_to_ids(t) for t in VISION_TOKENS)
    assert tok.convert_tokens_to_ids("<|im_end|>") not in ids
