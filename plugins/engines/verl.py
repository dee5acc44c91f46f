"""medsage's RL recipe as verl 0.9.1 settings: the overrides ``medsage rl`` hands ``verl.trainer.main_ppo``.

``verl_overrides`` translates a composed ``recipes/rl.yaml`` (batch sizes from the paper's per-device
batch and accumulation, α for the estimator, the agent-loop file with the request, the τ1/τ2 budgets and the
accuracy rule, the reward
function, the checkpoint and rollout-dump folders).

``cpu_overrides`` and ``launch_env`` are the CPU route's half (``medsage.plugins.engines.verl_cpu``):
what verl needs to train on a machine without accelerators. On a GPU cluster recipe neither is used
and verl runs exactly as configured by the recipe (vLLM rollout).
"""

from __future__ import annotations

import importlib.util
import math
import re
from pathlib import Path
from typing import Any

from medsage.launch import layout, rl_metrics
from medsage.recipes import hydra_value as _hydra_value


class RLConfigError(ValueError):
    """A recipe that cannot become a valid verl / EasyR1 run; the message says which field and why."""


def _module_file(module: str) -> str:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise RLConfigError(f"cannot locate {module}; is medsage installed in this environment?")
    return spec.origin


def batch_sizes(rl, world: int) -> dict[str, int]:
    """verl's batch sizes (in prompts) from the paper's per-device batch and accumulation.

    One optimiser step sees micro × accum × world sequences, i.e. that / rollout_n prompts. verl needs
    whole prompts whose sequences split evenly over the devices' micro-batches, so the prompt count is
    rounded up to the nearest such value (4 GPUs, 2 × 8, n = 6: 64 sequences -> 12 prompts = 72).
    """
    target_seqs = rl.micro_batch_per_device * rl.grad_accum * world
    step = rl.micro_batch_per_device * world
    prompts = max(1, math.ceil(target_seqs / rl.rollout_n))
    while (prompts * rl.rollout_n) % step:
        prompts += 1
    rollout = rl.rollout_batch_prompts or prompts
    if rollout % prompts:
        raise RLConfigError(f"rl.rollout_batch_prompts={rollout} must be a multiple of the update batch ({prompts} prompts)")
    return {"ppo_mini_batch_size": prompts, "train_batch_size": rollout, "sequences_per_update": prompts * rl.rollout_n}


def response_length(rl) -> int:
    """verl's response length. ``rl.response_budget=per_turn``: τ1's budget, plus the request and the retry's
    own budget when it retries (1,024 + 128 + 1,024). ``whole`` (B.1's limits): ``max_response_length`` holds
    τ1, the request and the retry together, so a sequence stays within max_prompt + max_response (2,048)."""
    if rl.retry and rl.response_budget == "per_turn":
        return int(rl.max_response_length) + int(rl.request_budget) + int(rl.retry_max_tokens)
    return int(rl.max_response_length)


def agent_loop_file(cfg, out_dir: Path) -> Path:
    """verl's agent-loop config (``agent_loop_config_path``): the loop class with the request, the τ1/τ2
    budgets and ``accuracy``, the reward recipe's accuracy rule (its trigger a1 != y and r_sc are the reward's)."""
    from omegaconf import OmegaConf

    from medsage.io import atomic_write_text
    from medsage.plugins.rewards.accuracy import recipe_accuracy

    entry: dict[str, Any] = {"name": "medsage_self_check",
                             "_target_": "medsage.plugins.self_check.loop.SelfCheckAgentLoop",
                             "retry": bool(cfg.rl.retry),
                             "tau1_max_tokens": int(cfg.rl.max_response_length),
                             # whole: the retry may use what τ1 and the request left of the one budget
                             "tau2_max_tokens": int(cfg.rl.retry_max_tokens if cfg.rl.response_budget == "per_turn"
                                                    else cfg.rl.max_response_length),
                             "accuracy": recipe_accuracy(cfg.reward.name, OmegaConf.to_container(cfg.reward.params,
                                                                                                resolve=True))}
    if cfg.rl.request:
        entry["request"] = str(cfg.rl.request)
    return atomic_write_text(out_dir / "agent_loop.yaml", OmegaConf.to_yaml(OmegaConf.create([entry])))


def verl_overrides(cfg, out_dir: Path) -> list[str]:
    """The verl Hydra overrides for a composed recipe (the command line verl's main_ppo receives)."""
    from omegaconf import OmegaConf

    from medsage.plugins.self_check.advantage import ALPHA_KEY

    rl, cluster = cfg.rl, cfg.cluster
    world = max(1, int(cluster.nnodes) * max(1, int(cluster.gpus_per_node)))
    sizes = batch_sizes(rl, world)
    reward_kwargs = {"reward": cfg.reward.name, "reward_params": OmegaConf.to_container(cfg.reward.params, resolve=True)}
    o = {
        "data.train_files": str(cfg.train_files),
        "data.val_files": str(cfg.val_files or cfg.train_files),
        "data.train_batch_size": sizes["train_batch_size"],
        "data.max_prompt_length": rl.max_prompt_length,
        "data.max_response_length": response_length(rl),
        "data.image_key": "images",
        "data.filter_overlong_prompts": True,
        "algorithm.adv_estimator": "medsage_self_check" if rl.retry else "grpo",
        **({f"+algorithm.{ALPHA_KEY}": float(rl.alpha)} if rl.retry else {}),  # α of Eq. 11: the estimator's
        "algorithm.use_kl_in_reward": False,
        "critic.enable": False,  # GRPO: no value model
        "actor_rollout_ref.model.path": str(cfg.model.path),
        "actor_rollout_ref.actor.optim.lr": rl.lr,
        "actor_rollout_ref.actor.ppo_mini_batch_size": sizes["ppo_mini_batch_size"],
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu": rl.micro_batch_per_device,
        "actor_rollout_ref.actor.use_kl_loss": rl.kl_coef > 0,
        "actor_rollout_ref.actor.kl_loss_coef": rl.kl_coef,
        "actor_rollout_ref.actor.kl_loss_type": "low_var_kl",
        "actor_rollout_ref.actor.freeze_vision_tower": rl.freeze_vision_tower,
        "actor_rollout_ref.rollout.name": "vllm",
        "actor_rollout_ref.rollout.n": rl.rollout_n,
        "actor_rollout_ref.rollout.temperature": rl.temperature,
        "actor_rollout_ref.rollout.gpu_memory_utilization": rl.gpu_memory_utilization,
        "actor_rollout_ref.rollout.tensor_model_parallel_size": rl.tensor_parallel,
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu": rl.log_prob_micro_batch,
        "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu": rl.log_prob_micro_batch,
        "reward.custom_reward_function.path": _module_file("medsage.plugins.engines.verl_reward"),
        "reward.custom_reward_function.name": "compute_score",
        "+reward.custom_reward_function.reward_kwargs": reward_kwargs,
        "trainer.total_epochs": rl.epochs,
        "trainer.nnodes": int(cluster.nnodes),
        "trainer.n_gpus_per_node": max(1, int(cluster.gpus_per_node)),
        "trainer.project_name": cfg.project,
        "trainer.experiment_name": f"{cfg.model.name}_{rl.name}",
        "trainer.default_local_dir": str(out_dir / "checkpoints"),
        # hf_model: each checkpoint also holds a Hugging Face folder, which evaluation loads as is.
        "actor_rollout_ref.actor.checkpoint.save_contents": ["model", "optimizer", "extra", "hf_model"],
        # verl's file logger: every step's metrics (medsage/self_check_rate, ...) in <out>/metrics.jsonl,
        # which the report reads for Figure 5; its path reaches the trainer actor through Ray's runtime env.
        "trainer.logger": [*cfg.loggers, *(["file"] if "file" not in cfg.loggers else [])],
        "trainer.save_freq": rl.save_freq,
        "trainer.test_freq": rl.test_freq,
        # verl's rollout dump (one JSONL per step), which medsage's viewer reads (medsage view)
        "trainer.rollout_data_dir": str(out_dir / "rollouts"),
        # the legacy trainer: the span ids reach the estimator through non_tensor_batch, which only
        # it keeps until the advantage step; its default v1 path also needs transfer_queue
        "trainer.use_v1": False,
        "actor_rollout_ref.rollout.agent.default_agent_loop": "medsage_self_check",
        # tells the loop a validation pass, which then answers once, without the answer-key retry
        "+actor_rollout_ref.rollout.agent.agent_loop_manager_class":
            "medsage.plugins.self_check.manager.SelfCheckAgentLoopManager",
        "actor_rollout_ref.rollout.agent.agent_loop_config_path": str(agent_loop_file(cfg, out_dir)),
        # main_ppo is a Hydra app: its run folder (main_ppo.log, .hydra/) would be ./outputs/<date>/ in the cwd
        "hydra.run.dir": str(out_dir / layout.RL_HYDRA_DIR),
    }
    o.update(attention_overrides(cfg))
    o.update(ray_overrides(cfg, world))
    o["+ray_kwargs.ray_init.runtime_env.env_vars"]["VERL_FILE_LOGGER_PATH"] = str(out_dir / rl_metrics.METRICS)
    if cluster.accelerator == "cpu":
        o.update(cpu_overrides())
    return [f"{k}={_hydra_value(v)}" for k, v in o.items()] + list(cfg.extra_overrides)


def console_step_metrics(log: str) -> dict[int, dict[str, float]]:
    """The numeric metrics of each step from verl's console logger (``step:N - key:value - ...``)."""
    number = re.compile(r"(?:np\.float64\()?([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|inf)\)?")
    steps: dict[int, dict[str, float]] = {}
    for line in log.splitlines():
        m = re.search(r"step:(\d+) - (.*)$", line)
        if not m:
            continue
        values = {}
        for pair in m.group(2).split(" - "):
            key, _, value = pair.partition(":")
            if (v := number.fullmatch(value.strip())) is not None:
                values[key.strip()] = float(v.group(1))
        steps[int(m.group(1))] = values
    return steps


def attention_overrides(cfg) -> dict[str, Any]:
    """``model.attn_implementation`` resolved in the RL environment (auto: flash_attention_2 where flash_attn
    imports there, else sdpa), as verl 0.9.1 reads it.

    verl's actor and reference model both load from ``actor_rollout_ref.model`` (workers/engine_workers.py),
    whose ``override_config.attn_implementation`` defaults to flash_attention_2 (workers/config/model.py).
    The vLLM rollout does not read it: vLLM picks its own attention backend and ships its own FlashAttention
    kernels. verl's remove-padding runs flash-attn's varlen kernels (models/transformers/qwen2_vl.py), so it
    is on only with flash_attention_2.
    """
    from medsage.launch.preflight import FLASH_ATTENTION_2, stage_attention

    try:
        attention = stage_attention(str(cfg.model.attn_implementation), cfg.cluster.envs.rl,
                                    on_gpu=cfg.cluster.accelerator == "gpu")
    except ValueError as err:
        raise RLConfigError(str(err)) from None
    return {"+actor_rollout_ref.model.override_config.attn_implementation": attention,
            "actor_rollout_ref.model.use_remove_padding": attention == FLASH_ATTENTION_2}


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
    """The running cluster ``medsage rl`` submits verl's driver to (``driver_command``): ``cluster.ray_address``, else
    ``RAY_ADDRESS``; None when it is a Ray job already (a pipeline stage: its cluster is the job's) or none is named."""
    from medsage.launch.pipeline.ray_jobs import configured_address, in_ray_job

    return None if in_ray_job() else configured_address(cfg.cluster.ray_address)


def joins_cluster(cfg) -> bool:
    """Whether verl's driver runs as a job of a running cluster (its ``ray.init`` joins it), not on a Ray of its own."""
    from medsage.launch.pipeline.ray_jobs import in_ray_job

    return in_ray_job() or ray_address(cfg) is not None


def driver_env(cfg) -> dict[str, str]:
    """Environment of verl's driver process (``python -m verl.trainer.main_ppo``)."""
    env = worker_env(cfg)
    if joins_cluster(cfg):
        # a job's driver: Ray refuses a ray.init runtime_env that repeats a field of the job's (verl
        # always passes py_executable); ours names the same interpreter (ray_overrides), so let it win
        env["RAY_OVERRIDE_JOB_RUNTIME_ENV"] = "1"
    else:
        # Ray resolves 127.0.0.1 to the interface address unless cluster mode is off
        # (medsage.launch.pipeline.ray_jobs); its own cluster must stay on loopback
        env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    return env


def driver_command(cfg, command: list[str]) -> list[str]:
    """``command`` (verl's driver) as ``medsage rl`` runs it: as it is, or, when ``ray_address`` names a cluster,
    submitted to that cluster as a job with ``driver_env`` (``launch/pipeline/submit.py``): ``ray.init`` takes a
    GCS or Ray Client address but not the dashboard's ``http://``, and inside the job every form works."""
    address = ray_address(cfg)
    if address is None:
        return command
    from medsage.launch.pipeline.submit import wrap

    from medsage.runtime import stage_python

    return wrap(address, command, python=stage_python(cfg.cluster.envs.rl), env=driver_env(cfg))


def ray_overrides(cfg, world: int) -> dict[str, Any]:
    """How verl's own ``ray.init`` starts: joining the cluster its job runs on, or a local one on 127.0.0.1."""
    init: dict[str, Any] = {"runtime_env": {"env_vars": worker_env(cfg)}}
    if joins_cluster(cfg):
        from medsage.runtime import stage_python

        init["address"] = "auto"  # the job's own cluster (RAY_ADDRESS): verl's driver always runs as a job here
        init["runtime_env"]["py_executable"] = stage_python(cfg.cluster.envs.rl)
    elif int(cfg.cluster.nnodes) > 1:
        raise RLConfigError(f"cluster.nnodes={cfg.cluster.nnodes}: verl spans several nodes of a running Ray cluster; "
                            "set cluster.ray_address (ray://head:10001 or http://head:8265) or run RL as a stage "
                            "of `medsage pipeline` on it (docs/multinode.md)")
    else:
        init.update({"_node_ip_address": "127.0.0.1", "include_dashboard": False})
        if cfg.cluster.accelerator == "cpu":
            # a logical GPU per rank for verl's resource pools; its placement groups (trainer ranks,
            # agent-loop and reward workers) need more logical CPUs than two cores offer
            init.update({"num_gpus": world, "num_cpus": max(8, 4 * world)})
    out = {f"+ray_kwargs.ray_init.{k}": v for k, v in init.items() if k != "runtime_env"}
    out["+ray_kwargs.ray_init.runtime_env.env_vars"] = init["runtime_env"]["env_vars"]
    if "py_executable" in init["runtime_env"]:
        out["ray_kwargs.ray_init.runtime_env.py_executable"] = init["runtime_env"]["py_executable"]
    return out


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
        "data.dataloader_num_workers": 0,
        # one agent-loop and one reward process instead of eight each: each imports torch and verl
        "actor_rollout_ref.rollout.agent.num_workers": 1,
        "reward.num_workers": 1,
    }
