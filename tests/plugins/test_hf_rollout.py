"""The CPU rollout (``hf_cpu``) reports the log-probs of the distribution the trainer scores.

verl's GRPO ratio and its rollout-vs-actor diagnostics (``training/rollout_probs_diff_*``) compare the
rollout's log-prob of each sampled token with the actor's recomputation. The actor scores the policy
with Qwen2.5-VL's 3-D mRoPE positions (verl, like LLaMA-Factory in SFT, builds them from
``mm_token_type_ids``); the rollout must sample from, and score, that same policy. It also bans the
vision placeholder tokens (``logit_bias``), so it reports the log-prob of the renormalised distribution
it drew from (vLLM's ``processed_logprobs``, verl's default): compared with the banned logits here.
"""

from __future__ import annotations

import types

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("verl")


def make_server(model_dir, seed=42, replica_rank=0):
    from transformers import AutoConfig

    from medsage.plugins.engines.verl_cpu.rollout import HFGenerationServer

    return HFGenerationServer(types.SimpleNamespace(prompt_length=512, response_length=24, seed=seed),
                              types.SimpleNamespace(hf_config=AutoConfig.from_pretrained(model_dir),
                                                    local_path=model_dir), replica_rank=replica_rank)


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    return make_server(tiny_model_dir)


def _actor_logits(server, full_ids, enc):
    """What the trainer computes: one forward over prompt + response, mRoPE positions from the token types."""
    ids = torch.tensor([full_ids])
    server.model.model.rope_deltas = None  # a fresh forward, not a continuation of the last generate
    with torch.no_grad():
        return server.model(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=enc["pixel_values"],
                            image_grid_thw=enc["image_grid_thw"],
                            mm_token_type_ids=torch.tensor(server.processor.create_mm_token_type_ids([full_ids])),
                            ).logits[0].float()


def test_image_rollout_log_probs_are_the_actors_of_the_banned_distribution(server):
    from PIL import Image

    from medsage.plugins.self_check.loop import vision_token_ids

    torch.manual_seed(0)
    image = Image.radial_gradient("L").convert("RGB").resize((112, 84))
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Where is the lesion?"}]}]
    prompt = server.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    enc = server.processor(text=[prompt], images=[image], return_tensors="pt")
    prompt_ids = enc["input_ids"][0].tolist()
    banned = {i: -100.0 for i in vision_token_ids(server.tokenizer)}
    out = server._generate(prompt_ids, {"temperature": 1.0, "max_tokens": 24, "logit_bias": banned}, [image])
    assert len(out.token_ids) == len(out.log_probs) > 0

    logits = _actor_logits(server, prompt_ids + out.token_ids, enc)[len(prompt_ids) - 1:-1]
    logits[:, list(banned)] -= 100.0  # the distribution the rollout drew from
    actor = torch.log_softmax(logits, -1).gather(-1, torch.tensor(out.token_ids)[:, None])[:, 0]
    assert torch.allclose(torch.tensor(out.log_probs), actor, atol=1e-4), (torch.tensor(out.log_probs) - actor).abs().max()


def test_the_rollout_samples_from_the_seed_it_is_configured_with(tiny_model_dir):
    """As vLLM's rollout does (engine seed = rollout.seed + replica rank): a server started again samples the same
    tokens, and another seed or replica samples others."""
    def sample(**kw):
        server = make_server(tiny_model_dir, **kw)
        ids = server.tokenizer("Where is the lesion?")["input_ids"]
        return [server._generate(ids, {"temperature": 1.0, "max_tokens": 24}, None).token_ids for _ in range(2)]

    first = sample(seed=42)
    assert first == sample(seed=42)
    assert first != sample(seed=7) and first != sample(seed=42, replica_rank=1)
