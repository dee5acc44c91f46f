"""The reward plugins behind verl's custom reward function and EasyR1's batch reward, and a
third-party reward package selected with reward=<name>."""

from __future__ import annotations

import textwrap

import pytest

from medsage.plugins.engines import easyr1_reward
from medsage.registry import REWARDS
from medsage.scaffold import render, render_check

BOX = '{"box_2d": [300, 420, 520, 610], "label": "bright lesion"}'


def traj(answer):
    return render(BOX, "A bright lesion.", "Bright foci fit a lesion.", f"So {answer}.", answer)


@pytest.fixture
def lab_package(tmp_path, monkeypatch):
    """A tiny installed distribution declaring a reward in medsage.rewards (dist-info on sys.path)."""
    (tmp_path / "lab_rewards.py").write_text(textwrap.dedent('''
        def brevity(item):
            """1 for a response under 20 characters."""
            return 1.0 if len(item.response) < 20 else 0.0
    '''))
    dist = tmp_path / "lab_rewards-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: lab-rewards\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[medsage.rewards]\nbrevity = lab_rewards:brevity\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "brevity"


def test_third_party_reward_is_selectable(lab_package, tmp_path):
    from medsage.launch import rl as rl_launch
    from medsage.plugins.rewards import build_reward
    from medsage.plugins.rewards.composite import CompositeReward

    assert "brevity" in REWARDS.names()
    assert build_reward("brevity")(easyr1_reward._item({"response": "x", "ground_truth": "yes"}))["overall"] == 1.0
    cfg = rl_launch.compose_recipe(["reward=brevity", "model=tiny", f"model.path={tmp_path}", "cluster=local_cpu",
                                    f"train_files={tmp_path / 't.parquet'}", f"output_dir={tmp_path / 'run'}"])
    assert cfg.reward.name == "brevity"
    overrides = rl_launch.verl_overrides(cfg, tmp_path / "run")
    assert any(o.startswith("+reward.custom_reward_function.reward_kwargs={reward:brevity,") for o in overrides)
    # ... and usable as a composite component
    comp = CompositeReward(weights={"accuracy": 1.0, "brevity": 1.0}, normalize=False)
    from medsage.plugins.rewards import RewardInput

    assert comp(RewardInput(traj("yes"), "yes", "closed"))["overall"] == 1.0  # the trajectory is > 20 chars


def test_verl_loads_the_reward_function_through_its_own_loader(lab_package):
    pytest.importorskip("verl")
    from omegaconf import OmegaConf
    from verl.trainer.ppo.reward import get_custom_reward_fn

    from medsage.launch.rl import _module_file

    def load(reward, params=None):
        return get_custom_reward_fn(OmegaConf.create({"reward": {"custom_reward_function": {
            "path": _module_file("medsage.plugins.engines.verl_reward"), "name": "compute_score",
            "reward_kwargs": {"reward": reward, "reward_params": params}}}}))

    fn = load("composite", {"weights": {"accuracy": 1.0, "format": 1.0}, "normalize": False})
    retry = traj("no") + "user\nplease check\nassistant\n" + render_check("The region was misread.") + traj("yes")
    out = fn(data_source="sage_rl", solution_str=retry, ground_truth="yes",
             extra_info={"question_type": "closed", "options": None, "id": "r1", "medsage_retried": True})
    assert out == {"score": 2.0, "accuracy": 1.0, "format": 1.0}
    wrong = fn(data_source="sage_rl", solution_str=traj("A"), ground_truth="B",
               extra_info={"question_type": "choice", "options": {"A": "Lung", "B": "Liver"}, "id": "r2"})
    assert wrong == {"score": 1.0, "accuracy": 0.0, "format": 1.0}
    assert load("brevity")(data_source="d", solution_str="short", ground_truth="yes", extra_info={})["score"] == 1.0


def test_easyr1_batch_signature():
    inputs = [{"response": traj("yes"), "response_length": 40, "ground_truth": "yes"},
              {"response": traj("no"), "response_length": 40, "ground_truth": "yes"},
              {"response": "Yes, I think so", "response_length": 5, "ground_truth": "yes"},
              {"response": traj("computed tomography"), "response_length": 40, "ground_truth": "Computed tomography"}]
    out = easyr1_reward.compute_score(inputs, reward="composite",
                                      reward_params={"weights": {"accuracy": 1.0, "format": 0.5}, "normalize": False})
    assert [set(o) for o in out] == [{"overall", "format", "accuracy"}] * 4
    assert [o["accuracy"] for o in out] == [1.0, 0.0, 1.0, 1.0]
    assert [o["format"] for o in out] == [1.0, 1.0, 0.0, 1.0]
    assert [o["overall"] for o in out] == [1.5, 0.5, 1.0, 1.5]
    # the accuracy column is the recipe's rule, as verl's reward and the retry judge with it
    row = [{"response": traj("nodule in the left lung"), "response_length": 40, "ground_truth": "left lung nodule"}]
    weights = {"accuracy": 1.0, "format": 0.5}
    semantic = easyr1_reward.compute_score(row, reward="composite", reward_params={"weights": weights})
    exact = easyr1_reward.compute_score(row, reward="composite", reward_params={
        "weights": weights, "components": {"accuracy": {"open_match": "exact"}}})
    assert semantic[0]["accuracy"] == 1.0 and exact[0]["accuracy"] == 0.0
    with pytest.raises(TypeError, match="list of reward inputs"):
        easyr1_reward.compute_score({"response": "x"})
