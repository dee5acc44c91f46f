"""medsage's RL recipe as verl 0.9.1 settings: the overrides ``medsage rl`` hands ``verl.trainer.main_ppo``.

``cpu_overrides`` and ``launch_env`` are the CPU route's half (``medsage.plugins.engines.verl_cpu``):
what verl needs to train on a machine without accelerators. On a GPU cluster recipe neither is used
and verl runs exactly as configured by the recipe (vLLM rollout).
"""

from __future__ import annotations

import os
from typing import Any

FP32 = {"param_dtype": "fp32", "reduce_dtype": "fp32", "buffer_dtype": "fp32"}


def worker_env(cfg) -> dict[str, str]:
    """Environment of verl's Ray workers (their runtime_env): medsage's engine reads the freeze flag."""
    from medsage.plugins.engines.verl_engine import FREEZE_ENV

    env = {FREEZE_ENV: "1" if cfg.rl.freeze_vision_tower else "0", "TOKENIZERS_PARALLELISM": "false"}
    if cfg.cluster.accelerator == "cpu":
        from medsage.plugins.engines import verl_cpu_env

        env.update(verl_cpu_env.ENV)
    return env


def ray_address(cfg) -> str | None:
    """The cluster verl joins: the recipe's, or the one whose job this is (the pipeline's); None: its own."""
    return cfg.cluster.ray_address or os.environ.get("RAY_ADDRESS") or None


def driver_env(cfg) -> dict[str, str]:
    """Environment of verl's driver process (``python -m verl.trainer.main_ppo``)."""
    env = worker_env(cfg)
    if not ray_address(cfg):
        # Ray resolves 127.0.0.1 to the interface address unless cluster mode is off
        # (medsage.launch.pipeline.ray_jobs); its own cluster must stay on loopback
        env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    return env


def ray_overrides(cfg, world: int) -> dict[str, Any]:
    """How verl's own ``ray.init`` starts: joining a running cluster, or a local one on 127.0.0.1."""
    init: dict[str, Any] = {"runtime_env": {"env_vars": worker_env(cfg)}}
    address = ray_address(cfg)
    if address:
        init["address"] = str(address)
    else:
        init.update({"_node_ip_address": "127.0.0.1", "include_dashboard": False})
        if cfg.cluster.accelerator == "cpu":
            # a logical GPU per rank for verl's resource pools; its placement groups (trainer ranks,
            # agent-loop and reward workers) need more logical CPUs than two cores offer
            init.update({"num_gpus": world, "num_cpus": max(8, 4 * world)})
    return {f"+ray_kwargs.ray_init.{k}": v for k, v in init.items() if k != "runtime_env"} | {
        "+ray_kwargs.ray_init.runtime_env.env_vars": init["runtime_env"]["env_vars"]}


def cpu_overrides() -> dict[str, Any]:
    """verl settings for FSDP training and Hugging Face generation on CPU."""
    from medsage.plugins.engines.verl_cpu_env import ROLLOUT_NAME

    return {
        "trainer.device": "cpu",
        "actor_rollout_ref.rollout.name": ROLLOUT_NAME,
        "actor_rollout_ref.rollout.tensor_model_parallel_size": 1,
        "actor_rollout_ref.actor.strategy": "fsdp2",  # FSDP1's sync_module_states needs a GPU
        "actor_rollout_ref.ref.strategy": "fsdp2",
        "actor_rollout_ref.actor.fsdp_config.strategy": "fsdp2",
        "actor_rollout_ref.ref.fsdp_config.strategy": "fsdp2",
        # fp32 throughout: the rollout server samples in fp32, so its log-probs match the trainer's
        "+actor_rollout_ref.actor.fsdp_config.mixed_precision": FP32,
        "+actor_rollout_ref.ref.fsdp_config.mixed_precision": FP32,
        "actor_rollout_ref.actor.use_torch_compile": False,
        "actor_rollout_ref.actor.fsdp_config.use_torch_compile": False,
        "actor_rollout_ref.ref.fsdp_config.use_torch_compile": False,
        "actor_rollout_ref.model.use_remove_padding": False,  # flash-attention varlen kernels
        "+actor_rollout_ref.model.override_config.attn_implementation": "sdpa",
        "data.dataloader_num_workers": 0,
        # one agent-loop and one reward process instead of eight each: each imports torch and verl
        "actor_rollout_ref.rollout.agent.num_workers": 1,
        "reward.num_workers": 1,
    }
