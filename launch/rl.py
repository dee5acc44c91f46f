"""``medsage rl``: the RL stage, from medsage's recipes to verl (or EasyR1) and, on a GPU node, a run.

Top to bottom:
1. compose ``recipes/rl.yaml`` with the user's Hydra overrides (``reward=<name>`` also accepts any
   reward installed in the ``medsage.rewards`` entry-point group, without a YAML of its own);
2. translate it into verl Hydra overrides (``verl_overrides``) and write the agent-loop file that
   carries α and the self-check request;
3. validate by composing verl's OWN trainer config (``verl/trainer/config/ppo_trainer.yaml``) with
   those overrides, turning its sections into verl's config dataclasses, running verl's
   ``validate_config`` and checking that medsage's estimator and agent loop are registered;
4. launch ``python -m verl.trainer.main_ppo <overrides>`` in the RL environment when an accelerator
   is present; otherwise print the command and why it was not launched.

``backend=easyr1`` writes EasyR1's config for plain GRPO instead; the retry needs verl.
"""

from __future__ import annotations

import importlib.util
import math
import re
import shlex
import sys
from pathlib import Path
from typing import Any

from medsage.launch import layout
from medsage.runtime import run_logged, stage_python

def add_arguments(parser) -> None:
    from medsage.launch.cli import add_overrides

    parser.description = ("Compose recipes/rl.yaml (+ model/ cluster/ rl/ reward/ groups), validate the result against "
                          "verl's own trainer config, and launch verl (GPU) or print the command (no accelerator).")
    parser.epilog = ("examples:\n  medsage rl model.path=/ckpt/sft train_files=/data/rl/train.parquet\n"
                     "  medsage rl rl=grpo dry_run=true ...\n  medsage rl backend=easyr1 rl=grpo ...")
    add_overrides(parser, "rl=grpo rl.alpha=0.2 dry_run=true")


class RLConfigError(ValueError):
    """A recipe that cannot become a valid verl / EasyR1 run; the message says which field and why."""


# ------------------------------------------------------------------------------------------------
# 1. Recipes
# ------------------------------------------------------------------------------------------------


def _reward_overrides(overrides: list[str]) -> list[str]:
    """``reward=<name>`` with no reward/<name>.yaml selects the installed entry point ``<name>``."""
    from medsage.recipes import recipes_dir

    out = []
    for o in overrides:
        key, sep, value = o.partition("=")
        if sep and key == "reward" and not (recipes_dir() / "reward" / f"{value}.yaml").exists():
            out += ["reward=plugin", f"reward.name={value}"]
        else:
            out.append(o)
    return out


def compose_recipe(overrides: list[str]):
    from medsage.recipes import compose

    return compose("rl", _reward_overrides(overrides))


# ------------------------------------------------------------------------------------------------
# 2. Recipe -> verl overrides
# ------------------------------------------------------------------------------------------------


def _module_file(module: str) -> str:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise RLConfigError(f"cannot locate {module}; is medsage installed in this environment?")
    return spec.origin


_BARE = re.compile(r"[A-Za-z_/.][\w./\-]*")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _hydra_value(v: Any) -> str:
    """A Python value in Hydra's override grammar."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}:{_hydra_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_hydra_value(x) for x in v) + "]"
    s = str(v)
    if _BARE.fullmatch(s) and s.lower() not in ("true", "false", "null", "nan", "inf") and not _NUMBER.fullmatch(s):
        return s
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


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


def agent_loop_file(cfg, out_dir: Path) -> Path:
    """verl's agent-loop config (``agent_loop_config_path``): the loop class with α and the request."""
    from omegaconf import OmegaConf

    from medsage.io import atomic_write_text

    entry: dict[str, Any] = {"name": "medsage_self_check",
                             "_target_": "medsage.plugins.self_check.loop.SelfCheckAgentLoop",
                             "alpha": float(cfg.rl.alpha)}
    if cfg.rl.request:
        entry["request"] = str(cfg.rl.request)
    return atomic_write_text(out_dir / "agent_loop.yaml", OmegaConf.to_yaml(OmegaConf.create([entry])))


def verl_overrides(cfg, out_dir: Path) -> list[str]:
    """The verl Hydra overrides for a composed recipe (the command line verl's main_ppo receives)."""
    from omegaconf import OmegaConf

    rl, cluster = cfg.rl, cfg.cluster
    world = max(1, int(cluster.nnodes) * max(1, int(cluster.gpus_per_node)))
    sizes = batch_sizes(rl, world)
    reward_kwargs = {"reward": cfg.reward.name, "reward_params": OmegaConf.to_container(cfg.reward.params, resolve=True)}
    o = {
        "data.train_files": str(cfg.train_files),
        "data.val_files": str(cfg.val_files or cfg.train_files),
        "data.train_batch_size": sizes["train_batch_size"],
        "data.max_prompt_length": rl.max_prompt_length,
        "data.max_response_length": rl.max_response_length,
        "data.image_key": "images",
        "data.filter_overlong_prompts": True,
        "algorithm.adv_estimator": "medsage_self_check" if rl.retry else "grpo",
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
        # which the report reads for Figure 5; set through Ray's runtime env so the trainer actor sees it.
        "trainer.logger": [*cfg.loggers, *(["file"] if "file" not in cfg.loggers else [])],
        "+ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH": str(out_dir / "metrics.jsonl"),
        "trainer.save_freq": rl.save_freq,
        "trainer.test_freq": rl.test_freq,
    }
    # The span ids and the composite's components reach the advantage step through non_tensor_batch,
    # which only the legacy trainer keeps there (medsage.plugins.self_check.verl_plugin).
    o["trainer.use_v1"] = False
    if rl.retry:
        o["actor_rollout_ref.rollout.agent.default_agent_loop"] = "medsage_self_check"
        o["actor_rollout_ref.rollout.agent.agent_loop_config_path"] = str(agent_loop_file(cfg, out_dir))
    return [f"{k}={_hydra_value(v)}" for k, v in o.items()] + list(cfg.extra_overrides)


# ------------------------------------------------------------------------------------------------
# 3. Validation against verl's own config
# ------------------------------------------------------------------------------------------------


def verl_config_dir() -> Path:
    spec = importlib.util.find_spec("verl")
    if spec is None or not spec.submodule_search_locations:
        raise RLConfigError("verl is not installed in this environment (pip install 'medsage[rl]')")
    return Path(next(iter(spec.submodule_search_locations))) / "trainer" / "config"


def compose_verl_config(overrides: list[str]):
    """verl 0.9.1's ppo_trainer config composed with ``overrides``; Hydra's error names a bad key."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(verl_config_dir()), version_base=None, job_name="medsage_rl_check"):
            return compose(config_name="ppo_trainer", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as err:
        raise RLConfigError(f"verl rejected the composed overrides: {err}") from err
    finally:
        GlobalHydra.instance().clear()


def validate_verl_config(config, *, check_model: bool = False) -> dict[str, str]:
    """verl's own checks on a composed config (no GPU needed); returns what medsage registered."""
    from verl.trainer.config import AlgoConfig
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import omega_conf_to_dataclass, validate_config

    import medsage.plugins.self_check.verl_plugin as plugin

    try:
        algo = omega_conf_to_dataclass(config.algorithm, dataclass_type=AlgoConfig)
        validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))
    except (AssertionError, ValueError, TypeError) as err:
        raise RLConfigError(f"verl's config validation failed: {err}") from err
    registered = plugin.check_registered()
    from verl.trainer.ppo.core_algos import get_adv_estimator_fn

    get_adv_estimator_fn(algo.adv_estimator)  # an unknown estimator fails here, not on the cluster
    if algo.adv_estimator == "medsage_self_check" and config.trainer.use_v1:
        raise RLConfigError("adv_estimator=medsage_self_check needs trainer.use_v1=false (see medsage.plugins.self_check.verl_plugin)")
    kwargs = config.reward.custom_reward_function.get("reward_kwargs") or {}
    if config.trainer.use_v1 and kwargs.get("reward") == "composite" and (kwargs.get("reward_params") or {}).get("normalize", True):
        raise RLConfigError("the composite reward normalised within the batch needs trainer.use_v1=false "
                            "(medsage.plugins.engines.verl_reward.normalise_batch runs at the legacy trainer's advantage step)")
    return registered


# ------------------------------------------------------------------------------------------------
# EasyR1
# ------------------------------------------------------------------------------------------------


def easyr1_config(cfg) -> dict[str, Any]:
    """EasyR1's config for plain GRPO (its examples/config.yaml layout). The retry needs verl."""
    from omegaconf import OmegaConf

    rl, cluster = cfg.rl, cfg.cluster
    if rl.retry:
        raise RLConfigError(
            f"rl={rl.name} asks for the self-check retry, which needs verl: EasyR1 has reward functions only, "
            "no agent loop or custom token credit. Use backend=verl, or rl=grpo for plain GRPO on EasyR1.")
    world = max(1, int(cluster.nnodes) * max(1, int(cluster.gpus_per_node)))
    sizes = batch_sizes(rl, world)
    return {
        "data": {"train_files": str(cfg.train_files), "val_files": str(cfg.val_files or cfg.train_files),
                 "prompt_key": "problem", "answer_key": "answer", "image_key": "images",
                 "max_prompt_length": rl.max_prompt_length, "max_response_length": rl.max_response_length,
                 "rollout_batch_size": sizes["train_batch_size"]},
        "algorithm": {"adv_estimator": "grpo", "use_kl_loss": rl.kl_coef > 0, "kl_coef": rl.kl_coef,
                      "kl_penalty": "low_var_kl"},
        "worker": {
            "actor": {"global_batch_size": sizes["ppo_mini_batch_size"],
                      "micro_batch_size_per_device_for_update": rl.micro_batch_per_device,
                      "micro_batch_size_per_device_for_experience": rl.log_prob_micro_batch,
                      "model": {"model_path": str(cfg.model.path), "freeze_vision_tower": rl.freeze_vision_tower},
                      "optim": {"lr": rl.lr}},
            "rollout": {"n": rl.rollout_n, "temperature": rl.temperature,
                        "gpu_memory_utilization": rl.gpu_memory_utilization,
                        "tensor_parallel_size": rl.tensor_parallel},
            "reward": {"reward_type": "batch",
                       "reward_function": f"{_module_file('medsage.plugins.engines.easyr1_reward')}:compute_score",
                       "reward_function_kwargs": {"reward": cfg.reward.name,
                                                  "reward_params": OmegaConf.to_container(cfg.reward.params, resolve=True)}},
        },
        "trainer": {"total_epochs": rl.epochs, "project_name": cfg.project,
                    "experiment_name": f"{cfg.model.name}_{rl.name}", "logger": list(cfg.loggers),
                    "nnodes": int(cluster.nnodes), "n_gpus_per_node": max(1, int(cluster.gpus_per_node)),
                    "save_checkpoint_path": str(Path(cfg.output_dir) / "checkpoints"),
                    "save_freq": rl.save_freq, "val_freq": rl.test_freq},
    }


# ------------------------------------------------------------------------------------------------
# 4. Launch
# ------------------------------------------------------------------------------------------------


def _no_launch_reason(cfg) -> str | None:
    if cfg.dry_run:
        return "dry_run=true"
    if cfg.cluster.accelerator != "gpu":
        return f"cluster={cfg.cluster.name} has accelerator={cfg.cluster.accelerator}; verl's rollout (vLLM) and FSDP training need GPUs"
    if cfg.cluster.envs.rl is None:
        try:
            import torch

            if not torch.cuda.is_available():
                return "no CUDA device is visible on this machine; verl's rollout (vLLM) and FSDP training need GPUs"
        except ImportError:
            return "torch is not installed in this environment"
        if importlib.util.find_spec("vllm") is None:
            return "vllm is not installed in this environment; set cluster.envs.rl to the RL environment"
    return None


def main(argv: list[str] | None = None) -> int:
    from omegaconf import OmegaConf

    from medsage.io import atomic_write_text

    from medsage.launch.cli import parse

    argv = parse("rl", argv).overrides
    try:
        cfg = compose_recipe(argv)
        out_dir = Path(cfg.output_dir).resolve()
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / "medsage_rl.yaml", OmegaConf.to_yaml(cfg))

        if cfg.backend == "easyr1":
            path = atomic_write_text(out_dir / "easyr1_config.yaml", OmegaConf.to_yaml(OmegaConf.create(easyr1_config(cfg))))
            print(f"EasyR1 config written to {path}\nrun it in the EasyR1 environment:\n"
                  f"  python3 -m verl.trainer.main config={shlex.quote(str(path))}")
            return 0
        if cfg.backend != "verl":
            raise RLConfigError(f"backend={cfg.backend!r}: expected verl or easyr1")

        overrides = verl_overrides(cfg, out_dir)
        verl_cfg = compose_verl_config(overrides)
        registered = validate_verl_config(verl_cfg)
        atomic_write_text(out_dir / layout.RL_VERL_CONFIG, OmegaConf.to_yaml(verl_cfg))
        atomic_write_text(out_dir / "verl_overrides.txt", "\n".join(overrides) + "\n")
    except RLConfigError as err:
        print(f"medsage rl: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # Hydra's own composition errors for medsage's recipes
        if type(err).__module__.split(".")[0] in ("hydra", "omegaconf"):
            print(f"medsage rl: {err}", file=sys.stderr)
            return 2
        raise

    reason = _no_launch_reason(cfg)
    try:
        python = stage_python(cfg.cluster.envs.rl)
    except FileNotFoundError as err:
        if not reason:
            print(f"medsage rl: {err}", file=sys.stderr)
            return 2
        python = str(Path(cfg.cluster.envs.rl) / "bin" / "python")  # only printed: the command to run there
    command = [python, "-m", "verl.trainer.main_ppo", *overrides]
    printable = " ".join(shlex.quote(c) for c in command[:3]) + "".join(f" \\\n    {shlex.quote(c)}" for c in overrides)
    print(f"verl config validated ({verl_cfg.algorithm.adv_estimator}; {registered['agent_loop'] if cfg.rl.retry else 'single_turn_agent'}); "
          f"written to {out_dir / layout.RL_VERL_CONFIG}")
    if reason:
        print(f"not launched: {reason}\ncommand:\n  {printable}")
        return 0
    print(f"launching:\n  {printable}", flush=True)
    rc = run_logged(command, out_dir / layout.RL_LOG)
    if rc == 0 and (final := link_final_model(out_dir)) is not None:
        print(f"final model: {final}")
    return rc


def link_final_model(out_dir: Path) -> Path | None:
    """Point ``<out_dir>/final_model`` at the latest checkpoint's Hugging Face folder; None if there is none.

    verl records the latest step in ``checkpoints/latest_checkpointed_iteration.txt`` and, with
    ``hf_model`` in save_contents, writes ``global_step_<N>/actor/huggingface``.
    """
    marker = out_dir / "checkpoints" / "latest_checkpointed_iteration.txt"
    if not marker.exists():
        return None
    hf = out_dir / "checkpoints" / f"global_step_{int(marker.read_text().strip())}" / "actor" / "huggingface"
    if not (hf / "config.json").exists():
        return None
    link = layout.rl_model(out_dir)
    tmp = out_dir / f".{link.name}.tmp"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(hf.relative_to(out_dir))
    tmp.replace(link)  # atomic: a reader sees the old or the new target, never none
    return link
