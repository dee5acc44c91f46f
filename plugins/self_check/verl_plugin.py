"""What verl imports at start-up: medsage's agent loop and advantage estimator, and the hooks medsage's runs need.

Declared in pyproject under the entry-point group ``verl.plugins``; ``import verl`` (0.9.1) loads
every module in that group in every verl process, Ray workers included. At import this module only
adds names to verl's registries (the agent loop ``medsage_self_check``, the estimator
``medsage_self_check``, and the frozen-tower engine in processes whose environment has medsage's
``MEDSAGE_FREEZE_VISION_TOWER``): a verl run that selects none of them runs exactly as without medsage.
verl swallows a failing plugin import at debug level, so ``medsage rl`` imports this module itself
first and reports any error (``check_registered``).

``install_trainer_hooks`` changes verl's legacy trainer, and only in a run that selected medsage's
agent-loop manager (``medsage.plugins.self_check.manager``, which ``medsage rl`` sets and which calls it
in the trainer's process when verl builds it):

- a registered advantage estimator receives tensors only, while the span ids recorded by the agent
  loop are ``non_tensor_batch`` columns. verl already passes ``non_tensor_batch`` to its GDPO estimator;
  the hook on ``compute_advantage`` does the same for ``medsage_self_check`` alone, after the one batch
  step every estimator of a medsage run needs: the composite reward normalised within the batch
  (``verl_reward.normalise_batch``; a batch without medsage's reward columns is left as it is);
- the self-check metrics join the step's metrics (``compute_data_metrics``);
- verl's rollout dump (``trainer.rollout_data_dir``) gets each rollout's spans (τ1, request, check, τ2)
  with the advantage its tokens were trained with, which ``medsage view`` shows (``_log_rollout_data``);
- equal-length VLM batches pack with their mRoPE positions ragged where verl's workers expect them
  (``verl_engine.ragged_positions`` on ``left_right_2_no_padding``).

Every name these reach inside verl is listed, with the release it was checked on, in
``medsage.plugins.engines.private_names``. This path needs verl's legacy trainer
(``trainer.use_v1=false``): the v1 trainer fetches a fixed list of tensor fields for the advantage and
the span ids never reach it. verl's open pull request #7473 would hand ``non_tensor_batch`` to the
advantage step of the v1 trainer; with it the ``compute_advantage`` hook and the legacy trainer could go.
"""

from __future__ import annotations

import functools

from medsage.plugins.engines import verl_engine, verl_reward
from medsage.plugins.self_check import advantage
from medsage.plugins.self_check.advantage import SPANS_DUMP_KEY
from medsage.plugins.self_check.loop import AGENT_NAME, SelfCheckAgentLoop  # noqa: F401  (registers the loop)


def install_trainer_hooks() -> None:
    """medsage's hooks on verl's legacy trainer (see the module docstring); idempotent. Called by medsage's
    agent-loop manager, so only a run that selected it is changed."""
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

    verl_log_rollout_data = ray_trainer.RayPPOTrainer._log_rollout_data

    @functools.wraps(verl_log_rollout_data)
    def log_rollout_data(self, batch, reward_extra_infos_dict, *args, **kwargs):
        if advantage.SPANS_KEY in batch.non_tensor_batch and "advantages" in batch.batch.keys():
            reward_extra_infos_dict = {**reward_extra_infos_dict,
                                       SPANS_DUMP_KEY: advantage.span_records(batch, self.tokenizer)}
        return verl_log_rollout_data(self, batch, reward_extra_infos_dict, *args, **kwargs)

    compute_advantage._medsage_hook = True
    ray_trainer.compute_advantage = compute_advantage
    ray_trainer.compute_data_metrics = compute_data_metrics
    ray_trainer.RayPPOTrainer._log_rollout_data = log_rollout_data
    ray_trainer.left_right_2_no_padding = verl_engine.ragged_positions(ray_trainer.left_right_2_no_padding)


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
verl_engine.register()
