"""The composite reward: weighted components, normalised within each batch (paper B.1).

    overall_j = Σ_i w_i · r_ij / s_i,      s_i = mean_j |r_ij| over the batch being scored

Dividing by the batch scale makes every component contribute on average w_i of the total whatever
its raw range, so a scorer that returns 0-10 instead of 0-1, or an accuracy that is rarely 1 early
in training, does not swamp or vanish beside the others. A component that is 0 over the whole
batch contributes 0. The scale is a function of the batch alone (no state carried between calls):
identical rollouts in one batch get identical rewards, so GRPO gives them exactly zero advantage.

``score_batch`` scores a whole batch (EasyR1 calls the reward with one). verl scores one rollout
per call, so ``__call__`` returns the raw components and their plain weighted sum, and verl's
trainer renormalises the batch before the advantage (``medsage.plugins.engines.verl_reward``).
``normalize=False`` gives the plain weighted sum everywhere.

A component is any reward name in the ``medsage.rewards`` group, with optional parameters
(``components: {consistency: {scorer: rule}}``).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from medsage.plugins.rewards import RewardInput


def normalise_batch(weights: Mapping[str, float], raws: Sequence[Mapping[str, float]]) -> list[float]:
    """``Σ_i w_i · r_ij / mean_j |r_ij|`` for each rollout j of one batch (0 for an all-zero component)."""
    scales = {name: sum(abs(r[name]) for r in raws) / len(raws) for name in weights} if raws else {}
    return [sum(w * r[name] / scales[name] for name, w in weights.items() if scales[name] > 0) for r in raws]


class CompositeReward:
    def __init__(self, weights: dict[str, float] | None = None, components: dict[str, dict[str, Any]] | None = None,
                 normalize: bool = True):
        from medsage.plugins.rewards import build_reward

        self.weights = {k: float(v) for k, v in (weights or {"accuracy": 1.0, "format": 0.5}).items()}
        if not self.weights or any(w < 0 for w in self.weights.values()) or sum(self.weights.values()) <= 0:
            raise ValueError(f"composite weights must be non-negative with a positive sum, got {self.weights}")
        if "composite" in self.weights:
            raise ValueError("a composite cannot contain itself")
        params = dict(components or {})
        if "self_check" in self.weights and "self_check" not in params:  # r_sc judges with the accuracy rule
            params["self_check"] = params.get("accuracy")
        self._parts = {name: build_reward(name, params.get(name)) for name in self.weights}
        self.normalize = normalize

    def raw(self, item: RewardInput) -> dict[str, float]:
        """Each component's raw value for one rollout."""
        return {name: part(item)["overall"] for name, part in self._parts.items()}

    def weighted_sum(self, raw: Mapping[str, float]) -> float:
        return sum(w * raw[name] for name, w in self.weights.items())

    def __call__(self, item: RewardInput) -> dict[str, float]:
        """One rollout: its components and their plain weighted sum (a batch of one has no scale)."""
        raw = self.raw(item)
        return {"overall": self.weighted_sum(raw), **raw}

    def score_batch(self, items: Sequence[RewardInput]) -> list[dict[str, float]]:
        """A whole batch: ``overall`` normalised within it (or the weighted sum with ``normalize=False``)."""
        raws = [self.raw(item) for item in items]
        overall = normalise_batch(self.weights, raws) if self.normalize else [self.weighted_sum(r) for r in raws]
        return [{"overall": o, **r} for o, r in zip(overall, raws)]
