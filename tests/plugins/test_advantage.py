"""Token credit (paper Eq. 11-12) on a hand-built verl DataProto with known spans."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("verl")

from medsage.plugins.self_check import advantage as adv_mod  # noqa: E402
from medsage.plugins.self_check.advantage import SPAN_CHECK as C, SPAN_NONE as N, SPAN_TAU1 as T1, SPAN_TAU2 as T2  # noqa: E402

L = 8  # response length
# Group "a": sample 0 accepted at τ1 (right), samples 1-2 retried; group "b": 3-4 accepted, 5 retried.
SPANS = [
    [T1, T1, T1, T1, T1],                      # a0 accepted, 5 tokens
    [T1, T1, N, N, C, C, T2, T2],              # a1 retried, corrected (r_sc = 1)
    [T1, N, N, C, T2, T2, T2],                 # a2 retried, still wrong
    [T1, T1, T1],                              # b0 accepted
    [T1, T1, T1, T1],                          # b1 accepted
    [T1, T1, N, C, C, C, T2],                  # b2 retried, still wrong
]
SCORES = [1.0, 1.0, 0.0, 1.0, 1.0, 0.0]        # outcome reward (of τ2 for a retry)
RETRIED = [False, True, True, False, False, True]
R_SC = [0.0, 1.0, 0.0, 0.0, 0.0, 0.0]
FIRST_CORRECT = [not r for r in RETRIED]       # the oracle trigger: exactly the wrong first answers retry
ALPHA = 0.2


def _batch():
    from verl import DataProto

    n = len(SPANS)
    mask = torch.zeros(n, L, dtype=torch.int64)
    rewards = torch.zeros(n, L)
    for i, spans in enumerate(SPANS):
        mask[i, : len(spans)] = torch.tensor([0 if s == N else 1 for s in spans])
        rewards[i, len(spans) - 1] = SCORES[i]
    spans_col = np.empty(n, dtype=object)
    spans_col[:] = SPANS
    return DataProto.from_dict(
        tensors={"token_level_rewards": rewards, "response_mask": mask},
        non_tensors={
            "uid": np.array(["a", "a", "a", "b", "b", "b"], dtype=object),
            adv_mod.SPANS_KEY: spans_col,
            adv_mod.RETRIED_KEY: np.array(RETRIED, dtype=object),
            adv_mod.SC_REWARD_KEY: np.array(R_SC, dtype=object),
            adv_mod.FIRST_CORRECT_KEY: np.array(FIRST_CORRECT, dtype=object),
            adv_mod.FINAL_CORRECT_KEY: np.array([s > 0 for s in SCORES], dtype=object),
        },
    )


# GRPO by hand: group a scores [1, 1, 0] and group b [1, 1, 0]: mean 2/3, unbiased std sqrt(1/3).
HI, LO = (1 - 2 / 3) / math.sqrt(1 / 3), (0 - 2 / 3) / math.sqrt(1 / 3)
EXPECTED = [
    [HI, HI, HI, HI, HI, 0, 0, 0],
    [0, 0, 0, 0, ALPHA, ALPHA, HI, HI],   # τ1 0, request 0, check α·1, τ2 outcome
    [0, 0, 0, 0, LO, LO, LO, 0],          # check α·0 = 0, τ2 negative outcome
    [HI, HI, HI, 0, 0, 0, 0, 0],
    [HI, HI, HI, HI, 0, 0, 0, 0],
    [0, 0, 0, 0, 0, 0, LO, 0],
]


def test_exact_per_token_advantages():
    data = _batch()
    adv, returns = adv_mod.compute_self_check_advantage(
        data.batch["token_level_rewards"], data.batch["response_mask"], data.non_tensor_batch["uid"],
        config={"norm_adv_by_std_in_grpo": True, adv_mod.ALPHA_KEY: ALPHA}, non_tensor_batch=data.non_tensor_batch)
    assert torch.allclose(adv, torch.tensor(EXPECTED, dtype=adv.dtype), atol=1e-4), adv
    assert torch.equal(adv, returns)


def test_through_verls_compute_advantage_and_registry():
    """verl's own entry (ray_trainer.compute_advantage) with the name resolved from verl's registry."""
    from omegaconf import OmegaConf
    from verl.trainer.config import AlgoConfig
    from verl.trainer.ppo import ray_trainer
    from verl.trainer.ppo.core_algos import get_adv_estimator_fn

    from medsage.plugins.self_check.verl_plugin import install_trainer_hooks

    install_trainer_hooks()  # as medsage's agent-loop manager does in a medsage run

    assert get_adv_estimator_fn("medsage_self_check") is adv_mod.compute_self_check_advantage
    # what verl's trainer passes: its algorithm section as composed (a DictConfig), α included
    algorithm = OmegaConf.create({"adv_estimator": "medsage_self_check", "norm_adv_by_std_in_grpo": True,
                                  adv_mod.ALPHA_KEY: ALPHA})
    data = ray_trainer.compute_advantage(_batch(), adv_estimator="medsage_self_check", config=algorithm)
    assert torch.allclose(data.batch["advantages"], torch.tensor(EXPECTED), atol=1e-4)
    # every other estimator still goes through verl's own code
    grpo = ray_trainer.compute_advantage(_batch(), adv_estimator="grpo", config=AlgoConfig(adv_estimator="grpo"))
    assert grpo.batch["advantages"][1, 0].item() == pytest.approx(HI, abs=1e-4)


def _advantages(alpha):
    data = _batch()
    adv, _ = adv_mod.compute_self_check_advantage(
        data.batch["token_level_rewards"], data.batch["response_mask"], data.non_tensor_batch["uid"],
        config={adv_mod.ALPHA_KEY: alpha}, non_tensor_batch=data.non_tensor_batch)
    return adv


@pytest.mark.parametrize("alpha", [0.0, 0.15, 0.5])
def test_alpha_changes_the_check_tokens_and_nothing_else(alpha):
    """α is the estimator's: the same batch (the loop's r_sc) trained with another α differs on the check
    tokens of corrected retries alone, by (α - α') · r_sc."""
    base, other = _advantages(ALPHA), _advantages(alpha)
    check = torch.tensor([[s == C for s in spans] + [False] * (L - len(spans)) for spans in SPANS])
    corrected = torch.tensor(R_SC).unsqueeze(-1).bool()
    assert torch.equal(base[~check], other[~check])  # every other token bit-identical
    assert torch.allclose(other[check & corrected], torch.full_like(other[check & corrected], alpha))
    assert torch.equal(other[check & ~corrected], torch.zeros_like(other[check & ~corrected]))
    assert adv_mod.SC_REWARD_KEY in _batch().non_tensor_batch and not any("advantage" in k for k in _batch().non_tensor_batch)


def test_alpha_is_required_and_the_loop_refuses_one():
    from medsage.plugins.self_check.loop import SelfCheckAgentLoop

    data = _batch()
    with pytest.raises(ValueError, match="algorithm.self_check_alpha"):
        adv_mod.compute_self_check_advantage(data.batch["token_level_rewards"], data.batch["response_mask"],
                                             data.non_tensor_batch["uid"], config={},
                                             non_tensor_batch=data.non_tensor_batch)
    with pytest.raises(ValueError, match="estimator"):  # an old agent-loop file's alpha is not dropped silently
        SelfCheckAgentLoop.__init__(object.__new__(SelfCheckAgentLoop), None, alpha=0.2)


def test_missing_spans_is_a_clear_error():
    data = _batch()
    with pytest.raises(ValueError, match="default_agent_loop=medsage_self_check"):
        adv_mod.compute_self_check_advantage(data.batch["token_level_rewards"], data.batch["response_mask"],
                                             data.non_tensor_batch["uid"], non_tensor_batch={})


def test_span_list_longer_than_response_is_an_error():
    with pytest.raises(ValueError, match="sample 0"):
        adv_mod.span_tensor([[T1] * 9], (1, L))


def test_metrics():
    m = adv_mod.self_check_metrics(_batch().non_tensor_batch)
    assert m["medsage/self_check_rate"] == pytest.approx(3 / 6)
    assert m["medsage/correction_rate"] == pytest.approx(1 / 3)
    # the oracle-triggered retry's self-correction numbers, under their own names: 3 of 6 right at t1,
    # 4 of 6 after the retry (a1 fixed), none turned wrong (only wrong answers are retried)
    assert {k: round(v, 6) for k, v in m.items() if k.startswith("medsage/oracle_retry/")} == {
        "medsage/oracle_retry/acc@t1": 0.5, "medsage/oracle_retry/acc@t2": round(4 / 6, 6),
        "medsage/oracle_retry/delta_i2c": round(1 / 6, 6), "medsage/oracle_retry/delta_c2i": 0.0}
    assert adv_mod.self_check_metrics({}) == {}


def test_step_metrics_include_self_check_rates():
    """verl's legacy trainer calls ray_trainer.compute_data_metrics each step; the plugin adds the rates."""
    from verl.trainer.ppo import ray_trainer

    from medsage.plugins.self_check.verl_plugin import install_trainer_hooks

    install_trainer_hooks()  # as medsage's agent-loop manager does in a medsage run

    data = ray_trainer.compute_advantage(_batch(), adv_estimator="medsage_self_check", config={adv_mod.ALPHA_KEY: ALPHA})
    n = len(SPANS)
    data.batch["token_level_scores"] = data.batch["token_level_rewards"]
    data.batch["prompts"] = torch.ones(n, 4, dtype=torch.long)
    data.batch["responses"] = torch.ones(n, L, dtype=torch.long)
    data.batch["attention_mask"] = torch.cat([torch.ones(n, 4, dtype=torch.long), data.batch["response_mask"]], dim=1)
    metrics = ray_trainer.compute_data_metrics(batch=data, use_critic=False)
    assert metrics["medsage/self_check_rate"] == pytest.approx(0.5)
    assert metrics["medsage/correction_rate"] == pytest.approx(1 / 3)
    assert "critic/score/mean" in metrics  # verl's own metrics are still there


def test_rollout_dump_spans_reach_the_viewer(tmp_path, tiny_model_dir):
    # What medsage adds to verl's rollout dump (span_records on the trained batch) and how the viewer shows it.
    import json

    import torch
    from transformers import AutoTokenizer
    from verl import DataProto

    from medsage.eval.view.load import load
    from medsage.plugins.self_check.advantage import SPAN_CHECK, SPAN_NONE, SPAN_TAU1, SPAN_TAU2, SPANS_DUMP_KEY, SPANS_KEY
    from medsage.plugins.self_check.advantage import span_records

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    parts = [("<ANSWER>no</ANSWER>", SPAN_TAU1, 0.0), ("Check it.<CHECK>", SPAN_NONE, 0.0),
             ("misread</CHECK>", SPAN_CHECK, 0.2), ("<ANSWER>yes</ANSWER>", SPAN_TAU2, 0.7)]
    ids, spans, adv = [], [], []
    for text, span, a in parts:
        t = tok.encode(text, add_special_tokens=False)
        ids += t
        spans += [span] * len(t)
        adv += [a] * len(t)
    n = len(ids) + 3  # verl pads the response
    batch = DataProto.from_dict(tensors={
        "responses": torch.tensor([ids + [0] * 3]),
        "response_mask": torch.tensor([[int(s != SPAN_NONE) for s in spans] + [0] * 3]),
        "advantages": torch.tensor([adv + [0.0] * 3])}, non_tensors={SPANS_KEY: [spans]})
    rows = span_records(batch, tok)[0]
    assert [r[0] for r in rows] == ["tau1", "request", "check", "tau2"] and n == len(ids) + 3
    assert [r[2] for r in rows] == [0.0, 0.0, 0.2, 0.7]
    text = "".join(p[0] for p in parts)
    (tmp_path / "1.jsonl").write_text(json.dumps({"input": "q", "output": text, "gts": "yes", "score": 1.0, "step": 1,
                                                  SPANS_DUMP_KEY: rows}) + "\n")
    item = load(tmp_path / "1.jsonl").items[0]
    titles = [t.title for t in item.traces]
    assert titles[0].startswith("τ1") and "+0.0000" in titles[0] and titles[1].startswith("τ2") and "+0.7000" in titles[1]
    assert item.details["self-check advantage"] == "+0.2000" and "self-check" in item.details["spans"]
