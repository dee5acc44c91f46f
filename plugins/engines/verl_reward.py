"""verl custom reward function built from medsage's reward plugins.

    reward.custom_reward_function.path=<this file>  reward.custom_reward_function.name=compute_score
    +reward.custom_reward_function.reward_kwargs.reward=composite
    +reward.custom_reward_function.reward_kwargs.reward_params={weights: {accuracy: 1.0, format: 0.5}}

``medsage rl`` writes these overrides. verl's reward workers call ``compute_score`` once per rollout
with the RL row's ``reward_model.ground_truth`` and ``extra_info`` (question_type, options, id). The
returned dict's ``score`` is the outcome reward; the components ride along as reward extra info.
For a self-check retry the rewards judge the revised trajectory (see ``medsage.plugins.rewards``).
"""

from __future__ import annotations

import json
from typing import Any

_BUILT: dict[str, Any] = {}  # one reward object per (name, params): the composite keeps running scales


def _reward(name: str, params: dict | None):
    from medsage.plugins.rewards import build_reward

    key = json.dumps([name, params or {}], sort_keys=True, default=str)
    if key not in _BUILT:
        _BUILT[key] = build_reward(name, params)
    return _BUILT[key]


def compute_score(data_source: str, solution_str: str, ground_truth: Any, extra_info: dict | None = None,
                  reward: str = "composite", reward_params: dict | None = None, **_: Any) -> dict[str, float]:
    from medsage.plugins.rewards import reward_input_from_row

    item = reward_input_from_row(solution_str, ground_truth, extra_info)
    out = _reward(reward, dict(reward_params) if reward_params else None)(item)
    return {"score": out["overall"], **{k: v for k, v in out.items() if k != "overall"}}
