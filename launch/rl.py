"""``medsage rl``: the RL stage, from medsage's recipes to verl (or EasyR1) and, on a GPU node, a run.

Top to bottom:
1. compose ``recipes/rl.yaml`` with the user's Hydra overrides (``reward=<name>`` also accepts any
   reward installed in the ``medsage.rewards`` entry-point group, without a YAML of its own);
2. translate it into verl Hydra overrides (``verl_overrides``) and write the agent-loop file that
   carries α and the self-check request;
3. validate by composing verl's OWN trainer config (``verl/trainer/config/ppo_trainer.yaml``) with
   those overrides, turning its sections into verl's config dataclasses, running verl's
   ``validate_config`` and checking that medsage's estimator and agent loop are registered;
4. on a GPU recipe, check the RL environment first (launch/preflight.py: CUDA and the GPUs the cluster
   recipe names, the driver, vLLM, flash-attn where the actor needs it), then launch
   ``python -m verl.trainer.main_ppo <overrides>`` there; the CPU route launches at once. A run that
   launched nothing exits non-zero with the fix; only ``dry_run=true`` prints the command and succeeds.

``backend=easyr1`` writes EasyR1's config for plain GRPO instead; the retry needs verl.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medsage.config import ClusterConfig, ConfigError, ModelConfig, checked
from medsage.launch import layout
from medsage.plugins.engines.verl import (  # noqa: F401  (the stage's API: tests and the pipeline use them)
    RLConfigError, _hydra_value, _module_file, agent_loop_file, batch_sizes, verl_overrides,
)
from medsage.launch.rl_metrics import keep_earlier_attempt
from medsage.runtime import run_logged, stage_python

def add_arguments(parser) -> None:
    from medsage.launch.cli import add_overrides

    parser.description = ("Compose recipes/rl.yaml (+ model/ cluster/ rl/ reward/ groups), validate the result against "
                          "verl's own trainer config, check the RL environment (GPU recipes) and launch verl; dry_run=true prints "
                          "the command instead.")
    parser.epilog = ("examples:\n  medsage rl model.path=/ckpt/sft train_files=/data/rl/train.parquet\n"
                     "  medsage rl rl=grpo dry_run=true ...\n  medsage rl backend=easyr1 rl=grpo ...")
    add_overrides(parser, "rl=grpo rl.alpha=0.2 dry_run=true")


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


@dataclass
class RLSection:
    """One ``recipes/rl/<name>.yaml``: the algorithm and its hyper-parameters (the YAML says what each is)."""

    name: str
    retry: bool
    alpha: float
    epochs: int
    lr: float
    max_prompt_length: int
    max_response_length: int
    retry_max_tokens: int
    request_budget: int
    micro_batch_per_device: int
    grad_accum: int
    log_prob_micro_batch: int
    rollout_n: int
    temperature: float
    kl_coef: float
    freeze_vision_tower: bool
    gpu_memory_utilization: float
    tensor_parallel: int
    save_freq: int
    test_freq: int
    response_budget: str
    request: str | None = None
    rollout_batch_prompts: int | None = None

    def __post_init__(self) -> None:
        """Values verl would fail on minutes into a run (a division by zero, a group too small), refused here."""
        problems = [f"rl.{k}={getattr(self, k)}: must be 1 or more" for k in (
            "epochs", "max_prompt_length", "max_response_length", "micro_batch_per_device", "grad_accum",
            "log_prob_micro_batch", "tensor_parallel") if getattr(self, k) < 1]
        if self.rollout_n < 2:  # GRPO's advantage is relative to the group: one rollout has nothing to compare with
            problems.append(f"rl.rollout_n={self.rollout_n}: must be 2 or more (the GRPO group)")
        if self.retry:
            problems += [f"rl.{k}={getattr(self, k)}: must be 1 or more with the retry"
                         for k in ("retry_max_tokens", "request_budget") if getattr(self, k) < 1]
        if self.rollout_batch_prompts is not None and self.rollout_batch_prompts < 1:
            problems.append(f"rl.rollout_batch_prompts={self.rollout_batch_prompts}: must be 1 or more, or null")
        # `not 0 < x < inf` refuses nan too (every comparison with it is false)
        problems += [f"rl.{k}={getattr(self, k)}: must be above 0 and finite" for k in ("lr", "temperature")
                     if not 0 < getattr(self, k) < float("inf")]
        problems += [f"rl.{k}={getattr(self, k)}: must be 0 or more and finite" for k in ("alpha", "kl_coef")
                     if not 0 <= getattr(self, k) < float("inf")]
        if not 0 < self.gpu_memory_utilization <= 1:
            problems.append(f"rl.gpu_memory_utilization={self.gpu_memory_utilization}: must be in (0, 1]")
        problems += [f"rl.{k}={getattr(self, k)}: must be -1 (never) or 1 or more" for k in ("save_freq", "test_freq")
                     if getattr(self, k) == 0 or getattr(self, k) < -1]
        if self.response_budget not in ("per_turn", "whole"):
            problems.append(f"rl.response_budget={self.response_budget!r}: expected per_turn or whole")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass
class RewardConfig:
    """One ``recipes/reward/<name>.yaml``: a ``medsage.rewards`` entry and its arguments (the reward checks those)."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class RLRecipe:
    """recipes/rl.yaml as composed, typed: checked by ``compose_recipe`` before verl is imported. The verl
    overrides built from it (and ``extra_overrides``) are checked by verl's own config afterwards."""

    model: ModelConfig
    cluster: ClusterConfig
    rl: RLSection
    reward: RewardConfig
    backend: str
    train_files: str
    output_dir: str
    project: str
    loggers: list[str]
    dry_run: bool
    extra_overrides: list[str]
    val_files: str | None = None

    def __post_init__(self) -> None:
        if self.backend not in ("verl", "easyr1"):
            raise ValueError(f"backend={self.backend!r}: expected verl or easyr1")


def compose_recipe(overrides: list[str]):
    """recipes/rl.yaml composed with ``overrides`` and typed (``RLRecipe``): a DictConfig."""
    from medsage.recipes import compose

    return checked(RLRecipe, compose("rl", _reward_overrides(overrides)), "recipes/rl.yaml")


# ------------------------------------------------------------------------------------------------
# 2. Recipe -> verl overrides: medsage.plugins.engines.verl (verl_overrides, batch_sizes, ...)
# ------------------------------------------------------------------------------------------------


# ------------------------------------------------------------------------------------------------
# 3. Validation against verl's own config
# ------------------------------------------------------------------------------------------------


def verl_config_dir() -> Path:
    spec = importlib.util.find_spec("verl")
    if spec is None or not spec.submodule_search_locations:
        from medsage.launch.preflight import setup_command

        raise RLConfigError(f"verl is not installed in this environment ({setup_command('rl')})")
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


def verl_algorithm(algorithm):
    """verl's ``algorithm`` section without medsage's estimator setting (α), which verl's AlgoConfig does not
    declare; verl's trainer hands the section to the estimator as it is, α included."""
    from omegaconf import OmegaConf

    from medsage.plugins.self_check.advantage import ALPHA_KEY

    return OmegaConf.masked_copy(algorithm, [k for k in algorithm if k != ALPHA_KEY])


def validate_verl_config(config, *, check_model: bool = False) -> dict[str, str]:
    """verl's own checks on a composed config (no GPU needed); returns what medsage registered."""
    from verl.trainer.config import AlgoConfig
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import omega_conf_to_dataclass, validate_config

    import medsage.plugins.self_check.verl_plugin as plugin
    from medsage.plugins.self_check.advantage import ALPHA_KEY

    try:
        algo = omega_conf_to_dataclass(verl_algorithm(config.algorithm), dataclass_type=AlgoConfig)
        validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))
    except (AssertionError, ValueError, TypeError) as err:
        raise RLConfigError(f"verl's config validation failed: {err}") from err
    registered = plugin.check_registered()
    from verl.trainer.ppo.core_algos import get_adv_estimator_fn

    get_adv_estimator_fn(algo.adv_estimator)  # an unknown estimator fails here, not on the cluster
    if algo.adv_estimator == "medsage_self_check" and config.algorithm.get(ALPHA_KEY) is None:
        raise RLConfigError(f"adv_estimator=medsage_self_check needs algorithm.{ALPHA_KEY} (α of Eq. 11; rl.alpha)")
    if algo.adv_estimator == "medsage_self_check" and config.trainer.use_v1:
        raise RLConfigError("adv_estimator=medsage_self_check needs trainer.use_v1=false (see medsage.plugins.self_check.verl_plugin)")
    kwargs = config.reward.custom_reward_function.get("reward_kwargs") or {}
    if config.trainer.use_v1 and kwargs.get("reward") == "composite" and (kwargs.get("reward_params") or {}).get("normalize", True):
        raise RLConfigError("the composite reward normalised within the batch needs trainer.use_v1=false "
                            "(medsage.plugins.engines.verl_reward.normalise_batch runs at the legacy trainer's advantage step)")
    return registered


def check_rl_data(config, *, dry_run: bool = False) -> None:
    """Refuse a dataset verl would shrink or stop short on without a word: every row of ``data.train_files`` and
    ``data.val_files`` must fit ``data.max_prompt_length`` as verl counts it (``verl_data``), and the train rows
    must last ``trainer.total_training_steps`` in ``trainer.total_epochs``. A dry run checks only what is there to
    check (files present, a model folder that loads)."""
    from medsage.plugins.engines.verl_data import overlong_report, prompt_lengths, steps_report

    files = []
    for key in ("train_files", "val_files"):
        value = config.data.get(key)
        files += [str(f) for f in ([value] if isinstance(value, str) else list(value or [])) if str(f) not in files]
    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        if dry_run:
            return
        raise RLConfigError(f"train_files / val_files: no such file: {', '.join(missing)}")
    model = config.actor_rollout_ref.model.path
    try:
        from transformers import AutoProcessor

        processor = AutoProcessor.from_pretrained(model)
    except (OSError, ValueError) as err:
        if dry_run:
            return
        raise RLConfigError(f"model.path={model}: cannot load its processor to count prompt lengths ({err})") from err
    train = config.data.train_files
    train = [str(train)] if isinstance(train, str) else [str(f) for f in train]
    train_rows = 0
    for path in files:
        try:
            lengths = prompt_lengths(path, processor)
        except (OSError, ValueError, KeyError) as err:
            raise RLConfigError(f"{path}: cannot read its rows as verl would ({type(err).__name__}: {err})") from err
        if (report := overlong_report(path, lengths, int(config.data.max_prompt_length))) is not None:
            raise RLConfigError(report)
        train_rows += len(lengths) * train.count(path)
    planned = config.trainer.get("total_training_steps")
    if (report := steps_report(train, train_rows, int(config.data.train_batch_size), int(config.trainer.total_epochs),
                               None if planned is None else int(planned))) is not None:
        raise RLConfigError(report)


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
                 "rollout_batch_size": sizes["train_batch_size"],
                 # the model recipe's bounds, as SFT and the verl rows use them
                 "min_pixels": int(cfg.model.image_min_pixels), "max_pixels": int(cfg.model.image_max_pixels)},
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


def needs_local_preflight(cfg) -> bool:
    """Whether this machine's RL environment must hold what the run needs: on a gpu recipe run here. The CPU route
    (medsage.plugins.engines.verl_cpu) needs no GPU facts; with a cluster address verl's driver runs as a job there,
    on GPUs this machine may not have (the pipeline's cluster check looks at every node)."""
    from medsage.plugins.engines.verl import ray_address

    return cfg.cluster.accelerator == "gpu" and not ray_address(cfg)


def preflight_report(cfg, verl_cfg):
    """The RL environment against what this run needs (launch/preflight.py), read off verl's composed config:
    its rollout engine, the actor's attention and remove-padding, extra_overrides included."""
    from medsage.launch import preflight

    model = verl_cfg.actor_rollout_ref.model
    # verl's own default when nothing sets it (workers/config/model.py)
    attention = (model.get("override_config") or {}).get("attn_implementation", preflight.FLASH_ATTENTION_2)
    needs = preflight.rl_needs(cfg.cluster, attention=str(attention), rollout=str(verl_cfg.actor_rollout_ref.rollout.name),
                               remove_padding=bool(model.get("use_remove_padding")))
    return preflight.run(needs, cfg.cluster.envs.rl, cfg.cluster.envs)


def main(argv: list[str] | None = None) -> int:
    from omegaconf import OmegaConf

    from medsage.io import atomic_write_text

    from medsage.launch.cli import parse

    argv = parse("rl", argv).overrides
    try:
        cfg = compose_recipe(argv)
        out_dir = Path(cfg.output_dir).resolve()
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / layout.RL_CONFIG, OmegaConf.to_yaml(cfg))

        if cfg.backend == "easyr1":
            path = atomic_write_text(out_dir / "easyr1_config.yaml", OmegaConf.to_yaml(OmegaConf.create(easyr1_config(cfg))))
            print(f"EasyR1 config written to {path}\nrun it in the EasyR1 environment:\n"
                  f"  python3 -m verl.trainer.main config={shlex.quote(str(path))}")
            if cfg.dry_run:
                return 0
            print("medsage rl: not launched: medsage writes EasyR1's config but does not run EasyR1; run the command "
                  "above, or pass dry_run=true to only write it", file=sys.stderr)
            return 1

        overrides = verl_overrides(cfg, out_dir)
        verl_cfg = compose_verl_config(overrides)
        registered = validate_verl_config(verl_cfg)
        check_rl_data(verl_cfg, dry_run=bool(cfg.dry_run))
        atomic_write_text(out_dir / layout.RL_VERL_CONFIG, OmegaConf.to_yaml(verl_cfg))
        atomic_write_text(out_dir / "verl_overrides.txt", "\n".join(overrides) + "\n")
    except (RLConfigError, ConfigError) as err:
        print(f"medsage rl: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # Hydra's own composition errors for medsage's recipes
        if type(err).__module__.split(".")[0] in ("hydra", "omegaconf"):
            print(f"medsage rl: {err}", file=sys.stderr)
            return 2
        raise

    from medsage.plugins.engines import verl as engine

    try:
        python = stage_python(cfg.cluster.envs.rl)
    except FileNotFoundError as err:
        if not cfg.dry_run:
            print(f"medsage rl: {err}", file=sys.stderr)
            return 2
        python = str(Path(cfg.cluster.envs.rl) / "bin" / "python")  # only printed: the command to run there
    command = [python, "-m", "verl.trainer.main_ppo", *overrides]
    printable = " ".join(shlex.quote(c) for c in command[:3]) + "".join(f" \\\n    {shlex.quote(c)}" for c in overrides)
    print(f"verl config validated ({verl_cfg.algorithm.adv_estimator}; {registered['agent_loop']}{'' if cfg.rl.retry else ', no retry'}); "
          f"written to {out_dir / layout.RL_VERL_CONFIG}")
    if cfg.dry_run:
        print(f"not launched: dry_run=true\ncommand:\n  {printable}")
        return 0
    if needs_local_preflight(cfg):
        report = preflight_report(cfg, verl_cfg)
        if not report.ok:
            # launched nothing: a failure, so a pipeline marks the stage failed and its rerun runs it again
            print(f"medsage rl: not launched: the RL environment cannot run this recipe\n{report.render()}\n"
                  f"command (once fixed):\n  {printable}", file=sys.stderr)
            return 1
    done, planned = checkpointed_step(out_dir), verl_cfg.trainer.get("total_training_steps")
    if done is not None and planned is not None and done >= planned:
        # verl would resume after the last step and train one more (a kill after the last checkpoint, before the
        # final_model link): the run is complete, only its link is missing
        final = link_final_model(out_dir)
        print(f"already trained: checkpoint of step {done} of {planned}; not launched again"
              + (f"\nfinal model: {final}" if final else ""))
        return 0 if final else 1
    where = f" (a job of the Ray cluster at {engine.ray_address(cfg)})" if engine.ray_address(cfg) else ""
    print(f"launching{where}:\n  {printable}", flush=True)
    if (earlier := keep_earlier_attempt(out_dir)) is not None:  # verl's file logger truncates its file on start
        print(f"the metrics of the earlier attempt are kept in {earlier.name}")
    # verl's driver imports the CPU route too (VERL_USE_EXTERNAL_MODULES), and binds its Ray to loopback
    rc = run_logged(engine.driver_command(cfg, command), out_dir / layout.RL_LOG,
                    env={**os.environ, **engine.driver_env(cfg)})
    save_freq = verl_cfg.trainer.save_freq
    if rc == 0 and (final := link_final_model(out_dir)) is not None:
        print(f"final model: {final}")
    elif rc == 0 and save_freq > 0:
        # verl saves at its last step whenever save_freq > 0: it stopped short, or saved no Hugging Face folder
        step = checkpointed_step(out_dir)
        why = (f"its last checkpoint (step {step}) has no weights in actor/huggingface (hf_model is not in "
               f"actor_rollout_ref.actor.checkpoint.save_contents)" if step is not None and step == planned else
               f"verl stopped before {'its last step' if planned is None else f'step {planned}'} (latest "
               f"checkpoint: {step}, save_freq={save_freq}): its log says where ({out_dir / layout.RL_LOG})")
        print(f"medsage rl: verl exited 0 but there is no {layout.RL_FINAL_MODEL}: {why}", file=sys.stderr)
        return 1
    elif rc == 0:  # asked for (save_freq -1); said at the end, not found later by the stage that reads the model
        print(f"medsage rl: trained, but no checkpoint was saved (rl.save_freq={save_freq}), so there is no "
              f"{layout.RL_FINAL_MODEL} to evaluate or train further; set rl.save_freq to a step count to keep one",
              file=sys.stderr)
    return rc


def checkpointed_step(out_dir: Path) -> int | None:
    """The step of verl's latest complete checkpoint in ``out_dir`` (its ``latest_checkpointed_iteration.txt``)."""
    marker = out_dir / "checkpoints" / "latest_checkpointed_iteration.txt"
    try:
        return int(marker.read_text().strip())
    except (OSError, ValueError):
        return None


def link_final_model(out_dir: Path) -> Path | None:
    """Point ``<out_dir>/final_model`` at the latest checkpoint's Hugging Face folder; None if there is none.

    verl records the latest step in ``checkpoints/latest_checkpointed_iteration.txt`` and, with
    ``hf_model`` in save_contents, writes the weights into ``global_step_<N>/actor/huggingface``.
    """
    link = layout.rl_model(out_dir)
    step = checkpointed_step(out_dir)
    hf = out_dir / "checkpoints" / f"global_step_{step}" / "actor" / "huggingface"
    # verl writes config.json and the tokenizer there on every save; the weights only with hf_model
    if step is None or not (hf / "config.json").exists() or not any(hf.glob("*.safetensors")):
        # a link from an earlier attempt would name an older step as the final model
        link.unlink(missing_ok=True)
        return None
    tmp = out_dir / f".{link.name}.tmp"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(hf.relative_to(out_dir))
    tmp.replace(link)  # atomic: a reader sees the old or the new target, never none
    return link
