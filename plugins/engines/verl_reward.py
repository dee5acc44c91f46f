"""verl custom reward function built from medsage's reward plugins, and the composite's per-batch step.

    reward.custom_reward_function.path=<this file>  reward.custom_reward_function.name=compute_score
    +reward.custom_reward_function.reward_kwargs.reward=composite
    +reward.custom_reward_function.reward_kwargs.reward_params={weights: {accuracy: 1.0, format: 0.5}}

``medsage rl`` writes these overrides. verl 0.9.1's reward loop calls ``compute_score`` once per
rollout, as each rollout finishes, on any of several reward workers: no call sees the batch. So
``compute_score`` is stateless: the components (``accuracy``, ``format``, ...) and their plain
weighted sum as ``score``, plus one ``medsage/weight/<component>`` column per weight when the
composite normalises. verl puts these in the batch's ``non_tensor_batch``; before the advantage,
``normalise_batch`` (called from medsage's verl plugin hook on ``compute_advantage``) replaces each
outcome reward with the composite normalised within the whole batch (paper B.1), the same numbers
EasyR1's ``score_batch`` gives. For a self-check retry the rewards judge the revised trajectory.
"""

from __future__ import annotations

from typing import Any

WEIGHT_PREFIX = "medsage/weight/"  # non_tensor_batch columns carrying the composite's weights to the batch step


def compute_score(data_source: str, solution_str: str, ground_truth: Any, extra_info: dict | None = None,
                  reward: str = "composite", reward_params: dict | None = None, **_: Any) -> dict[str, float]:
    from medsage.plugins.rewards import engine_reward, on_grid, reward_input_from_row
    from medsage.plugins.rewards.composite import CompositeReward

    item = reward_input_from_row(solution_str, ground_truth, extra_info)
    scorer = engine_reward(reward, dict(reward_params) if reward_params else None)
    out = scorer(item)
    extra = {k: v for k, v in out.items() if k != "overall"}
    if isinstance(scorer, CompositeReward) and scorer.normalize:
        extra.update({f"{WEIGHT_PREFIX}{name}": w for name, w in scorer.weights.items()})
    return {"score": on_grid(out["overall"]), **extra}


def normalise_batch(data):
    """Rewrite a verl batch's outcome rewards as the composite normalised within the batch (in place).

    ``data`` is verl's ``DataProto`` at the advantage step (``token_level_scores`` /
    ``token_level_rewards`` set, reward extra info in ``non_tensor_batch``). A batch without weight
    columns (another reward, or ``normalize=False``) is left as it is. Any KL penalty already in
    ``token_level_rewards`` is kept.
    """
    from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase

    from medsage.plugins.rewards import on_grid
    from medsage.plugins.rewards.composite import normalise_batch as normalise

    columns = data.non_tensor_batch
    weights = {k[len(WEIGHT_PREFIX):]: float(v[0]) for k, v in columns.items() if k.startswith(WEIGHT_PREFIX)}
    if not weights:
        return data
    missing = sorted(name for name in weights if name not in columns)
    if missing:
        raise KeyError(f"composite components {missing} are not in the batch's reward extra info")
    raws = [{name: float(columns[name][j]) for name in weights} for j in range(len(data))]
    # verl's own placement of a rollout's score (last valid response token), as its reward loop does
    overall = [on_grid(x) for x in normalise(weights, raws)]
    scores = RewardManagerBase.assemble_rm_scores(data, overall).to(data.batch["token_level_scores"])
    data.batch["token_level_rewards"] = data.batch["token_level_rewards"] - data.batch["token_level_scores"] + scores
    data.batch["token_level_scores"] = scores
    return data
