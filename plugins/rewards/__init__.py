"""Reward plugins for the RL stage (paper §3.3, A.4), one file per reward.

A reward is a plain callable ``reward(item: RewardInput) -> float`` (or, for the composite, a dict
with ``"overall"`` and one entry per component). Built-ins and third-party rewards are found the
same way, through the entry-point group ``medsage.rewards`` (``medsage.registry.REWARDS``), and
``build_reward(name, params)`` turns either into the one shape the backends call.

For a self-check retry the decoded response is ``τ1 [request] <CHECK>c</CHECK> τ2``: outcome rewards
(format, accuracy, consistency) judge the revised trajectory τ2, the one the policy finally gives.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

from medsage.scaffold import split_retry


@dataclass(frozen=True)
class RewardInput:
    """One rollout to score."""

    response: str                       # decoded response; a retry holds τ1, the check span and τ2
    ground_truth: str                   # reward_model.ground_truth of the RL row
    question_type: str = "open"         # extra_info.question_type: closed | choice | open
    options: dict[str, str] | None = None  # extra_info.options for choice questions
    question: str | None = None         # the question text, for trajectory scorers that read it
    extra: dict[str, Any] = field(default_factory=dict)  # anything else the backend passed


def final_trajectory(response: str) -> str:
    """The trajectory the policy finally answered with: τ2 after ``</CHECK>``, else the whole text."""
    parts = split_retry(response)
    return response if parts is None else parts[2]


def build_reward(name: str, params: dict[str, Any] | None = None) -> Callable[[RewardInput], dict[str, float]]:
    """The reward registered as ``name``, called uniformly: ``fn(item) -> {"overall": ..., <parts>}``.

    ``params`` go to a reward factory (a class or a function whose first parameter is not the
    item, e.g. the composite's weights); a plain reward function takes none.
    """
    from medsage.registry import REWARDS

    obj = REWARDS.get(name)
    params = dict(params or {})
    if inspect.isclass(obj):
        obj = obj(**params)
    elif params:
        raise TypeError(f"reward {name!r} is a plain function and takes no parameters, got {sorted(params)}")

    def call(item: RewardInput) -> dict[str, float]:
        out = obj(item)
        if isinstance(out, dict):
            if "overall" not in out:
                raise ValueError(f"reward {name!r} returned a dict without 'overall': {sorted(out)}")
            return {k: float(v) for k, v in out.items()}
        return {"overall": float(out), name: float(out)}

    call.__name__ = f"reward_{name}"
    return call


def recipe_component(reward: str, params: dict[str, Any] | None, name: str) -> dict[str, Any]:
    """The parameters a reward recipe (``reward.name``, ``reward.params``) gives the reward ``name``: the
    composite's ``components.<name>``, the reward's own parameters when it is ``name``, else none."""
    params = dict(params or {})
    if reward == name:
        return params
    if reward == "composite":
        return dict((params.get("components") or {}).get(name) or {})
    return {}


_ENGINE_REWARDS: dict[str, Any] = {}
REWARD_GRID = 2.0 ** -12  # engines' outcome rewards are multiples of this


def on_grid(value: float) -> float:
    """``value`` rounded to a multiple of 2^-12. verl's GRPO divides by (group std + 1e-6): six equal
    rewards like 1.2 have a float32 group mean 1e-7 off, which becomes a ±0.1 advantage. Multiples of
    2^-12 (below 2^8 in size, groups up to 16) sum exactly in float32, so equal rewards give exactly 0."""
    return round(float(value) / REWARD_GRID) * REWARD_GRID


def engine_reward(name: str, params: dict[str, Any] | None = None):
    """The reward an engine's reward function scores with, built once per (name, params) per process:
    the ``CompositeReward`` itself (engines need its ``score_batch`` and weights), else ``build_reward``'s callable."""
    import json

    from medsage.plugins.rewards.composite import CompositeReward
    from medsage.registry import REWARDS

    key = json.dumps([name, params or {}], sort_keys=True, default=str)
    if key not in _ENGINE_REWARDS:
        obj = REWARDS.get(name)
        _ENGINE_REWARDS[key] = obj(**(params or {})) if obj is CompositeReward else build_reward(name, params)
    return _ENGINE_REWARDS[key]


def reward_input_from_row(response: str, ground_truth: Any, extra_info: dict | None) -> RewardInput:
    """A RewardInput from an RL row's ``reward_model.ground_truth`` and ``extra_info``
    (``question_type``, ``options``, ``id``; written by the data pipeline). A missing type is decided as
    evaluation decides it (``medsage.vocab.type_of_answer``: a yes/no reference is closed)."""
    from medsage.vocab import type_of_answer

    extra = dict(extra_info or {})
    options = extra.get("options")
    if options is not None and not isinstance(options, dict):  # parquet may hand back a list of pairs
        options = dict(options)
    options = {k: v for k, v in options.items() if v is not None} if options else None
    return RewardInput(response=response or "", ground_truth=str(ground_truth),
                       question_type=str(extra.get("question_type") or type_of_answer(str(ground_truth))),
                       options=options,
                       question=extra.get("question"), extra=extra)
