"""What verl imports at start-up: medsage's agent loop and advantage estimator.

Declared in pyproject under the entry-point group ``verl.plugins``; ``import verl`` (0.9.1) loads
every module in that group in every verl process, Ray workers included, so the registrations below
exist wherever verl looks them up. verl swallows a failing plugin import at debug level, so
``medsage rl`` imports this module itself first and reports any error (``check_registered``).

One hook beyond verl's registries: a registered advantage estimator receives tensors only, while
the span ids recorded by the agent loop are ``non_tensor_batch`` columns. verl already passes
``non_tensor_batch`` to its GDPO estimator; ``_pass_non_tensor_batch`` does the same for
``medsage_self_check`` alone, and adds the self-check metrics to the step's metrics. Every other
estimator goes through verl's own code, after the one batch step every estimator needs: the
composite reward normalised within the batch (``verl_reward.normalise_batch``). This path needs verl's legacy trainer
(``trainer.use_v1=false``): the v1 trainer fetches a fixed list of tensor fields for the advantage
and the span ids never reach it.
"""

from __future__ import annotations

import functools

from medsage.plugins.engines import verl_reward
from medsage.plugins.self_check import advantage
from medsage.plugins.self_check.loop import AGENT_NAME, SelfCheckAgentLoop  # noqa: F401  (registers the loop)


def _pass_non_tensor_batch() -> None:
    from verl.trainer.ppo import ray_trainer

    if getattr(ray_trainer.compute_advantage, "_medsage_hook", False):
        return
    verl_compute_advantage = ray_trainer.compute_advantage
    verl_compute_data_metrics = ray_trainer.compute_data_metrics

    @functools.wraps(verl_compute_advantage)
    def compute_advantage(data, adv_estimator, *args, config=None, **kwargs):
        data = verl_reward.normalise_batch(data)  # the composite, normalised within the batch (B.1)
        if adv_estimator != advantage.ESTIMATOR_NAME:
            return verl_compute_advantage(data, adv_estimator, *args, config=config, **kwargs)
        adv, returns = advantage.compute_self_check_advantage(
            token_level_rewards=data.batch["token_level_rewards"], response_mask=data.batch["response_mask"],
            index=data.non_tensor_batch["uid"], config=config, non_tensor_batch=data.non_tensor_batch,
        )
        data.batch["advantages"], data.batch["returns"] = adv, returns
        return data

    @functools.wraps(verl_compute_data_metrics)
    def compute_data_metrics(batch, *args, **kwargs):
        metrics = verl_compute_data_metrics(batch, *args, **kwargs)
        metrics.update(advantage.self_check_metrics(batch.non_tensor_batch))
        return metrics

    compute_advantage._medsage_hook = True
    ray_trainer.compute_advantage = compute_advantage
    ray_trainer.compute_data_metrics = compute_data_metrics


def check_registered() -> dict[str, str]:
    """What verl now resolves for medsage's names; raises if a registration is missing."""
    from verl.experimental.agent_loop.agent_loop import _agent_loop_registry
    from verl.trainer.ppo.core_algos import get_adv_estimator_fn

    fn = get_adv_estimator_fn(advantage.ESTIMATOR_NAME)
    if AGENT_NAME not in _agent_loop_registry:
        raise RuntimeError(f"agent loop {AGENT_NAME!r} is not registered with verl")
    return {"adv_estimator": f"{fn.__module__}.{fn.__qualname__}",
            "agent_loop": _agent_loop_registry[AGENT_NAME]["_target_"]}


advantage.register()
_pass_non_tensor_batch()
