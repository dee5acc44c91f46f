"""Trajectory consistency reward (paper A.4): a trajectory scorer's verdict on the reasoning chain.

A scorer is any object with ``score(trajectory, item) -> float in [0, 1]``, registered in the
entry-point group ``medsage.scorers`` (``rule`` below; ``learned``, the contrastively trained scorer
of plugins/scorer) or named as ``package.module:ScorerClass``; a class is constructed with ``scorer_kwargs``.

The rule scorer is the mean of four key-information checks, none of which asks for textual
overlap with a reference:
1. every stage and the answer are present (lenient parse, as evaluation reads model output);
2. ``<LOC>`` names at least one valid region;
3. the conclusion supports the answer: a yes/no answer agrees with the conclusion's own yes/no
   words when it has any, other answers have their words in the conclusion;
4. the visual analysis talks about what was localised: a region label shares a word with it
   (a region without a label passes).
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol

from medsage.answers import decide_yes_no, normalize
from medsage.plugins.rewards import RewardInput, final_trajectory
from medsage.scaffold import Trajectory, parse_lenient


class TrajectoryScorer(Protocol):
    def score(self, trajectory: Trajectory, item: RewardInput) -> float: ...


class RuleScorer:
    """Four cheap structural-consistency checks; see the module docstring."""

    def score(self, trajectory: Trajectory, item: RewardInput) -> float:
        return sum(self.checks(trajectory).values()) / 4.0

    def checks(self, t: Trajectory) -> dict[str, bool]:
        regions, _ = t.regions()
        con, answer, vis = t.con or "", t.answer or "", normalize(t.vis or "")
        said, _ = decide_yes_no(answer)
        if said is not None:
            con_said, _ = decide_yes_no(con)
            supported = con_said in (None, said)
        else:
            answer_words = set(normalize(answer).split())
            supported = bool(answer_words) and answer_words <= set(normalize(con).split())
        labels = [set(normalize(r.label).split()) for r in regions if r.label]
        grounded = not labels or any(words & set(vis.split()) for words in labels)
        return {"complete": t.complete, "region": bool(regions), "supported": supported, "grounded": grounded}


def load_scorer(spec: str = "rule", **kwargs: Any) -> TrajectoryScorer:
    """A ``medsage.scorers`` entry point (``rule``, ``learned``) or ``"module:Class"``; a class is
    constructed with ``kwargs``."""
    from medsage.registry import SCORERS

    module, sep, attr = spec.partition(":")
    obj = getattr(importlib.import_module(module), attr) if sep else SCORERS.get(spec)
    scorer = obj(**kwargs) if isinstance(obj, type) else obj
    if not callable(getattr(scorer, "score", None)):
        raise TypeError(f"scorer {spec!r} has no score(trajectory, item) method")
    return scorer


class ConsistencyReward:
    """``reward=consistency`` (or a composite component): the scorer's value for the final trajectory."""

    def __init__(self, scorer: str = "rule", scorer_kwargs: dict[str, Any] | None = None):
        self.scorer = load_scorer(scorer, **dict(scorer_kwargs or {}))

    def __call__(self, item: RewardInput) -> float:
        value = float(self.scorer.score(parse_lenient(final_trajectory(item.response)), item))
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"trajectory scorer returned {value}, outside [0, 1]")
        return value
