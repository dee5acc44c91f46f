"""The composite reward normalised within each batch (paper B.1), identically for verl and EasyR1,
and the same score from both engines for the same response (question type and options included)."""

from __future__ import annotations

import pytest

from medsage.data_pipeline.writers import easyr1_row, verl_row
from medsage.plugins.engines import easyr1_reward
from medsage.plugins.rewards import REWARD_GRID, RewardInput
from medsage.plugins.rewards.composite import CompositeReward, normalise_batch
from medsage.prompts import PromptConfig
from medsage.records import Sample
from medsage.scaffold import render

BOX = '{"box_2d": [300, 420, 520, 610], "label": "bright lesion"}'
PARAMS = {"weights": {"accuracy": 1.0, "format": 0.5}, "normalize": True}


def traj(answer, loc=BOX):
    return render(loc, "A bright lesion.", "Bright foci fit a lesion.", f"So {answer}.", answer)


def test_batch_scale_is_the_batch_alone():
    comp = CompositeReward(**PARAMS)
    items = [RewardInput(traj(a), "yes", "closed") for a in ("yes", "yes", "no", "no")]
    first = comp.score_batch(items)
    assert comp.score_batch(items) == first  # no state carried from one batch to the next
    # accuracy mean |r| = 0.5, format mean |r| = 1: a correct rollout gets 1/0.5 + 0.5/1
    assert [o["overall"] for o in first] == [2.5, 2.5, 0.5, 0.5]
    assert normalise_batch({"accuracy": 1.0}, [{"accuracy": 0.0}] * 3) == [0.0, 0.0, 0.0]  # all-zero component
    plain = CompositeReward(**{**PARAMS, "normalize": False}).score_batch(items)
    assert [o["overall"] for o in plain] == [1.5, 1.5, 0.5, 0.5]


def _verl_reward_fn():
    from omegaconf import OmegaConf
    from verl.trainer.ppo.reward import get_custom_reward_fn

    from medsage.launch.rl import _module_file

    return get_custom_reward_fn(OmegaConf.create({"reward": {"custom_reward_function": {
        "path": _module_file("medsage.plugins.engines.verl_reward"), "name": "compute_score",
        "reward_kwargs": {"reward": "composite", "reward_params": PARAMS}}}}))


def _verl_batch(responses, ground_truth, uids, reward_fn):
    """A verl DataProto at the advantage step, scored one rollout per call as verl's reward loop does."""
    import numpy as np
    import torch
    from verl import DataProto
    from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase

    n, prompt_len, resp_len = len(responses), 4, 12
    lengths = [3 + (7 * i) % 9 for i in range(n)]  # ragged responses: the score sits at each one's last token
    attention = torch.zeros(n, prompt_len + resp_len, dtype=torch.long)
    attention[:, :prompt_len] = 1
    for i, length in enumerate(lengths):
        attention[i, prompt_len:prompt_len + length] = 1
    outs = [reward_fn(data_source="sage_rl", solution_str=r, ground_truth=ground_truth,
                      extra_info={"question_type": "closed", "options": None, "id": f"r{i}"})
            for i, r in enumerate(responses)]
    data = DataProto.from_dict(
        tensors={"prompts": torch.ones(n, prompt_len, dtype=torch.long),
                 "responses": torch.ones(n, resp_len, dtype=torch.long), "attention_mask": attention,
                 "response_mask": attention[:, prompt_len:].clone()},
        non_tensors={"uid": np.array(uids, dtype=object),
                     **{k: np.array([o[k] for o in outs]) for k in outs[0] if k != "score"}})
    scores = RewardManagerBase.assemble_rm_scores(data, [o["score"] for o in outs])
    data.batch["token_level_scores"] = scores
    data.batch["token_level_rewards"] = scores.clone()
    return data, outs


def test_identical_rollouts_get_zero_advantage_through_verls_estimator():
    pytest.importorskip("verl")
    import torch
    from omegaconf import OmegaConf
    from verl.trainer.ppo import ray_trainer

    from medsage.plugins.self_check.verl_plugin import install_trainer_hooks

    install_trainer_hooks()  # as medsage's agent-loop manager does in a medsage run

    # group g0: six identical correct rollouts; g1: three right, three wrong; g2: all without format
    responses = [traj("yes")] * 6 + [traj("yes")] * 3 + [traj("no")] * 3 + ["yes"] * 6
    uids = ["g0"] * 6 + ["g1"] * 6 + ["g2"] * 6
    data, outs = _verl_batch(responses, "yes", uids, _verl_reward_fn())
    assert len({o["score"] for o in outs[:6]}) == 1  # per-call scores carry no running state

    data = ray_trainer.compute_advantage(data, adv_estimator="grpo", num_repeat=6, norm_adv_by_std_in_grpo=True,
                                         config=OmegaConf.create({}))
    adv = data.batch["advantages"]
    assert torch.equal(adv[:6], torch.zeros_like(adv[:6]))     # exactly zero, not merely small
    assert torch.equal(adv[12:], torch.zeros_like(adv[12:]))
    assert (adv[6:9].sum(-1) > 0).all() and (adv[9:12].sum(-1) < 0).all()

    # the outcome rewards verl trained on are the batch-normalised composite, the numbers EasyR1 gives
    easy = easyr1_reward.compute_score([{"response": r, "response_length": 1, "ground_truth": "yes"}
                                        for r in responses], reward="composite", reward_params=PARAMS)
    trained = data.batch["token_level_rewards"].sum(-1).tolist()
    assert trained == [o["overall"] for o in easy]
    # accuracy mean |r| over the batch = 15/18 and format = 12/18: each term averages its weight
    assert trained[0] == pytest.approx(1.0 / (15 / 18) + 0.5 / (12 / 18), abs=REWARD_GRID)


def test_verl_and_easyr1_give_the_same_score_for_a_choice_answer(tmp_path):
    pytest.importorskip("verl")
    image = tmp_path / "x.png"
    image.write_bytes(b"png")
    sample = Sample(id="s1", source="slake", images=[str(image)], question="Which organ?", answer="B",
                    question_type="choice", options={"A": "Lung", "B": "Liver"})
    prompt = PromptConfig.load("lvkc")
    vrow, erow = verl_row(sample, 0, prompt), easyr1_row(sample, prompt)
    verl_fn = _verl_reward_fn()
    for answer, correct in (("B. Liver", 1.0), ("B", 1.0), ("Liver", 1.0), ("A. Lung", 0.0)):
        v = verl_fn(data_source=vrow["data_source"], solution_str=traj(answer),
                    ground_truth=vrow["reward_model"]["ground_truth"], extra_info=vrow["extra_info"])
        # EasyR1 hands its reward only the response and the answer cell (as ground_truth)
        (e,) = easyr1_reward.compute_score([{"response": traj(answer), "response_length": 1,
                                             "ground_truth": erow["answer"]}], reward="composite",
                                           reward_params={**PARAMS, "normalize": False})
        assert v["accuracy"] == e["accuracy"] == correct, answer
        assert v["score"] == e["overall"]


def test_rl_launch_keeps_the_batch_step_reachable(tmp_path):
    pytest.importorskip("verl")
    from medsage.launch import rl as rl_launch

    base = ["model=tiny", f"model.path={tmp_path}", "cluster=local_cpu", f"train_files={tmp_path / 't.parquet'}",
            f"output_dir={tmp_path / 'run'}", "rl=grpo"]
    cfg = rl_launch.compose_recipe(base)
    overrides = rl_launch.verl_overrides(cfg, tmp_path / "run")
    assert "trainer.use_v1=false" in overrides  # plain GRPO too: the v1 trainer never calls compute_advantage's hook
    rl_launch.validate_verl_config(rl_launch.compose_verl_config(overrides))
    with pytest.raises(rl_launch.RLConfigError, match="normalised within the batch"):
        rl_launch.validate_verl_config(rl_launch.compose_verl_config([*overrides, "trainer.use_v1=true"]))
    plain = rl_launch.verl_overrides(rl_launch.compose_recipe([*base, "reward.params.normalize=false"]), tmp_path / "r")
    rl_launch.validate_verl_config(rl_launch.compose_verl_config([*plain, "trainer.use_v1=true"]))
