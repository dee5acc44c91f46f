"""The composite reward: weighted components with dynamic weight normalisation.

    overall = Σ_i w_i · r_i / s_i

``s_i`` is component i's running scale, an exponential moving average of its mean absolute raw
value (momentum ``momentum``), starting from ``init_scale`` (1: the nominal range of a 0-1 reward,
so a component that is 0 for the first rollouts does not blow up the first time it is 1) and
floored at ``min_scale``.
Dividing by it makes every component contribute on average w_i / Σ w of the total whatever its raw
range, so a scorer that returns 0-10 instead of 0-1, or an accuracy that is rarely 1 early in
training, does not swamp or vanish beside the others ("to keep reward scale stable", overview).
``score_batch`` updates the scales once from a whole batch (EasyR1 scores batches); ``__call__``
updates them per item (verl's reward workers call one item at a time). ``normalize=False`` gives
the plain weighted sum.

A component is any reward name in the ``medsage.rewards`` group, with optional parameters
(``components: {consistency: {scorer: rule}}``).
"""

from __future__ import annotations

from typing import Any

from medsage.plugins.rewards import RewardInput


class CompositeReward:
    def __init__(self, weights: dict[str, float] | None = None, components: dict[str, dict[str, Any]] | None = None,
                 normalize: bool = True, momentum: float = 0.99, init_scale: float = 1.0, min_scale: float = 1e-3):
        from medsage.plugins.rewards import build_reward

        self.weights = {k: float(v) for k, v in (weights or {"accuracy": 1.0, "format": 0.5}).items()}
        if not self.weights or any(w < 0 for w in self.weights.values()) or sum(self.weights.values()) <= 0:
            raise ValueError(f"composite weights must be non-negative with a positive sum, got {self.weights}")
        if "composite" in self.weights:
            raise ValueError("a composite cannot contain itself")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        params = dict(components or {})
        self._parts = {name: build_reward(name, params.get(name)) for name in self.weights}
        self.normalize, self.momentum, self.min_scale = normalize, momentum, min_scale
        if init_scale <= 0 or min_scale <= 0:
            raise ValueError("init_scale and min_scale must be positive")
        self.scales: dict[str, float] = {name: float(init_scale) for name in self.weights}

    def _observe(self, name: str, mean_abs: float) -> None:
        self.scales[name] = self.momentum * self.scales[name] + (1 - self.momentum) * mean_abs

    def _combine(self, raw: dict[str, float]) -> dict[str, float]:
        total = 0.0
        for name, w in self.weights.items():
            scale = max(self.scales[name], self.min_scale) if self.normalize else 1.0
            total += w * raw[name] / scale
        return {"overall": total, **raw}

    def _raw(self, item: RewardInput) -> dict[str, float]:
        return {name: part(item)["overall"] for name, part in self._parts.items()}

    def __call__(self, item: RewardInput) -> dict[str, float]:
        raw = self._raw(item)
        for name, value in raw.items():
            self._observe(name, abs(value))
        return self._combine(raw)

    def score_batch(self, items: list[RewardInput]) -> list[dict[str, float]]:
        raws = [self._raw(item) for item in items]
        if raws:
            for name in self.weights:
                self._observe(name, sum(abs(r[name]) for r in raws) / len(raws))
        return [self._combine(r) for r in raws]
