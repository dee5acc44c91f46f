"""EasyR1 reward function built from medsage's reward plugins (plain GRPO only).

    worker.reward.reward_function=<this file>:compute_score

EasyR1 scores a batch: ``compute_score(reward_inputs)`` with one dict per rollout holding
``response``, ``response_length`` and ``ground_truth``; it wants one dict per rollout with
``overall``, ``format`` and ``accuracy``. EasyR1 passes no question type: a yes/no reference is
closed and anything else open (medsage.vocab.type_of_answer, as in evaluation) (a row may still carry ``question_type`` / ``options``).
The composite's dynamic weight normalisation uses the whole batch (``score_batch``).
The self-check retry needs verl's agent loop: EasyR1 has no equivalent, so there is none here.
"""

from __future__ import annotations

from typing import Any

_BUILT: dict[str, Any] = {}


def _item(row: dict[str, Any]):
    from medsage.plugins.rewards import reward_input_from_row

    extra = {k: row[k] for k in ("question_type", "options", "id") if row.get(k) is not None}
    return reward_input_from_row(row["response"], row["ground_truth"], extra)


def compute_score(reward_inputs: list[dict[str, Any]], reward: str = "composite",
                  reward_params: dict | None = None, **_: Any) -> list[dict[str, float]]:
    from medsage.plugins.rewards import build_reward
    from medsage.plugins.rewards.accuracy import accuracy_reward
    from medsage.plugins.rewards.composite import CompositeReward
    from medsage.plugins.rewards.format import format_reward
    from medsage.registry import REWARDS

    if not isinstance(reward_inputs, list):
        raise TypeError("EasyR1 passes a list of reward inputs; is worker.reward.reward_type batch?")
    items = [_item(row) for row in reward_inputs]
    key = repr((reward, sorted((reward_params or {}).items())))
    if key not in _BUILT:
        obj = REWARDS.get(reward)
        _BUILT[key] = obj(**(reward_params or {})) if obj is CompositeReward else build_reward(reward, reward_params)
    scorer = _BUILT[key]
    overall = ([o["overall"] for o in scorer.score_batch(items)] if isinstance(scorer, CompositeReward)
               else [scorer(it)["overall"] for it in items])
    return [{"overall": o, "format": format_reward(it), "accuracy": accuracy_reward(it)}
            for o, it in zip(overall, items)]
