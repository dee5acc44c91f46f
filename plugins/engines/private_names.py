"""Every name medsage reaches inside verl and Ray that is not one of their extension points, and the
releases it was checked against.

medsage extends verl through its registries (agent loops, advantage estimators, engines, rollouts,
platforms), its ``verl.plugins`` entry point, its reward-function path and its config keys, and Ray
through ``ray.init`` and the Jobs API. What neither engine offers is reached by name: a module function
rebound, a private method overridden or wrapped, a private dict read or written, an environment variable
or keyword argument Ray reads without documenting it. Each such name is listed below with what medsage
does to it and where; ``problems`` checks the installed engines against the list, and
``tests/plugins/test_private_names.py`` fails, naming each missing or changed name, on any other release
than the ones checked. A new release is adopted by re-reading each entry and adding the version here.

verl is pinned (``verl==0.9.1`` in pyproject). Ray is pinned to the releases below (the RL stage runs
verl's own ``ray.init``; the pipeline starts an embedded cluster, ``medsage.launch.pipeline.ray_jobs``).
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass

VERL_CHECKED = ("0.9.1",)
RAY_CHECKED = ("2.60.0",)


@dataclass(frozen=True)
class Reached:
    """One name medsage reaches: ``module:attr.attr`` (or a module alone), what medsage does, where."""

    target: str
    does: str                          # rebinds | wraps | overrides | calls | reads | writes | sets | passes
    used_in: str                       # medsage file
    params: tuple[str, ...] = ()       # parameters of the callable medsage relies on, in order from the first
    in_source: str | None = None       # text the target's source must still hold (a name read inside a body)

    def resolve(self):
        module, _, attr = self.target.partition(":")
        obj = importlib.import_module(module)
        for part in filter(None, attr.split(".")):
            obj = getattr(obj, part)
        return obj


_TRAINER = "verl.trainer.ppo.ray_trainer"
_LOOP = "verl.experimental.agent_loop.agent_loop"
_FSDP = "verl.workers.engine.fsdp.transformer_impl"

VERL: tuple[Reached, ...] = (
    # the legacy trainer's hooks (medsage.plugins.self_check.verl_plugin.install_trainer_hooks)
    Reached(f"{_TRAINER}:compute_advantage", "wraps (rebinds the module function)", "plugins/self_check/verl_plugin.py",
            ("data", "adv_estimator", "gamma", "lam", "num_repeat", "norm_adv_by_std_in_grpo", "config")),
    Reached(f"{_TRAINER}:compute_data_metrics", "wraps (rebinds the module function)",
            "plugins/self_check/verl_plugin.py", ("batch", "use_critic")),
    Reached(f"{_TRAINER}:RayPPOTrainer._log_rollout_data", "wraps (private method)", "plugins/self_check/verl_plugin.py",
            ("self", "batch", "reward_extra_infos_dict")),
    Reached(f"{_TRAINER}:left_right_2_no_padding", "wraps (rebinds the name the trainer calls)",
            "plugins/engines/verl_engine.py", ("data",)),
    Reached(f"{_TRAINER}:RayPPOTrainer.fit", "reads: the trainer calls the names above as module globals",
            "plugins/self_check/verl_plugin.py", in_source="compute_advantage("),
    # the agent loop and its manager
    Reached(f"{_LOOP}:_agent_loop_registry", "reads (private dict)", "plugins/self_check/verl_plugin.py"),
    Reached(f"{_LOOP}:AgentLoopBase._get_mm_processor_kwargs", "calls (private method)", "plugins/self_check/loop.py",
            ("self", "audio_data")),
    Reached(f"{_LOOP}:AgentLoopBase._assert_mm_supported", "calls (private method)", "plugins/self_check/loop.py",
            ("self", "has_multi_modal")),
    Reached(f"{_LOOP}:AgentLoopBase.ct_build_initial_tokens", "calls", "plugins/self_check/loop.py",
            ("self", "messages", "tools", "images", "videos", "audios")),
    Reached(f"{_LOOP}:AgentLoopBase.ct_merge_assistant_token", "calls", "plugins/self_check/loop.py",
            ("self", "runtime_token_ids", "assistant_token_ids", "response_mask", "response_logprobs",
             "assistant_logprobs")),
    Reached(f"{_LOOP}:AgentLoopBase.ct_merge_context_msg", "calls", "plugins/self_check/loop.py",
            ("self", "previous_messages", "updated_messages", "runtime_token_ids", "response_mask",
             "response_logprobs")),
    Reached(f"{_LOOP}:AgentLoopManager.__init__", "sets agent_loop_workers_class, which the manager reads",
            "plugins/self_check/manager.py", in_source="agent_loop_workers_class"),
    Reached(f"{_LOOP}:AgentLoopWorker.generate_sequences", "overrides", "plugins/self_check/manager.py",
            ("self", "batch")),
    Reached(f"{_TRAINER}:RayPPOTrainer._validate", "reads: validation is meta_info['validate']",
            "plugins/self_check/manager.py", in_source='"validate": True'),
    # the composite reward's batch step
    Reached("verl.experimental.reward_loop.reward_manager.base:RewardManagerBase.assemble_rm_scores", "calls",
            "plugins/engines/verl_reward.py", ("data", "scores")),
    # engines
    Reached("verl.workers.engine.base:EngineRegistry._engines", "reads (private dict)",
            "plugins/engines/verl_engine.py, plugins/engines/verl_cpu/__init__.py"),
    Reached(f"{_FSDP}:FSDPEngineWithLMHead._build_module", "overrides (private method)",
            "plugins/engines/verl_engine.py", ("self",)),
    Reached(f"{_FSDP}:FSDPEngineWithLMHead._build_fsdp_module", "overrides (private method)",
            "plugins/engines/verl_cpu/__init__.py", ("self", "module")),
    Reached(f"{_FSDP}:CPUOffloadPolicy", "rebinds while the CPU engine builds", "plugins/engines/verl_cpu/__init__.py"),
    Reached("verl.workers.engine_workers:initialize_global_process_group_ray", "wraps (rebinds the module function)",
            "plugins/engines/verl_cpu/__init__.py", ("timeout_second", "backend")),
    # the CPU rollout
    Reached("verl.workers.rollout.base:_ROLLOUT_REGISTRY", "writes (private dict)", "plugins/engines/verl_cpu/__init__.py"),
    Reached("verl.workers.rollout.replica:RolloutReplica", "sets _server_address (private attribute)",
            "plugins/engines/verl_cpu/rollout.py", in_source="_server_address"),
    # verl's image loader, which sizes RL images (medsage.plugins.engines.verl_data counts them the same way)
    Reached("qwen_vl_utils.vision_process:IMAGE_MIN_TOKEN_NUM", "reads", "plugins/engines/verl_data.py"),
    Reached("qwen_vl_utils.vision_process:IMAGE_MAX_TOKEN_NUM", "reads", "plugins/engines/verl_data.py"),
    Reached("verl.utils.dataset.vision_utils:process_image", "reads: verl resizes by the row's pixel bounds",
            "plugins/engines/verl_data.py", in_source="fetch_image(image"),
)

RAY: tuple[Reached, ...] = (
    # an embedded cluster kept on 127.0.0.1, and the dashboard trimmed to the Jobs API
    Reached("ray._private.ray_constants:ENABLE_RAY_CLUSTER", "sets", "launch/pipeline/ray_jobs.py"),
    Reached("ray._private.ray_constants", "sets RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER, which it reads",
            "launch/pipeline/ray_jobs.py, plugins/engines/verl.py", in_source='"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"'),
    Reached("ray._private.ray_constants:PROCESS_TYPE_DASHBOARD", "reads", "launch/pipeline/ray_jobs.py"),
    Reached("ray._private.services:start_ray_process", "wraps (private function)", "launch/pipeline/ray_jobs.py",
            ("command", "process_type")),
    Reached("ray._private.ray_constants:MAX_RESOURCE_QUANTITY", "reads: the bound of ray_num_cpus, checked before Ray starts",
            "launch/pipeline/app.py"),
    Reached("ray._private.worker", "filters its logger; sets RAY_OVERRIDE_JOB_RUNTIME_ENV, which it reads",
            "launch/pipeline/ray_jobs.py, plugins/engines/verl.py", in_source="RAY_OVERRIDE_JOB_RUNTIME_ENV"),
    # verl's own ray.init (ray_kwargs.ray_init), and the CPU rollout's actors
    Reached("ray:init", "passes _node_ip_address (an undeclared keyword)", "plugins/engines/verl.py",
            in_source="_node_ip_address"),
    Reached("ray.actor", "calls __ray_call__ on an actor handle", "plugins/engines/verl_cpu/rollout.py",
            in_source="def __ray_call__("),
)


def problems(names: tuple[Reached, ...]) -> list[str]:
    """One line per listed name that is missing or changed in the installed engine."""
    out = []
    for name in names:
        try:
            obj = name.resolve()
        except (ImportError, AttributeError) as err:
            out.append(f"{name.target} ({name.does}, {name.used_in}): missing ({type(err).__name__}: {err})")
            continue
        if name.params:
            try:
                have = tuple(inspect.signature(obj).parameters)
            except (TypeError, ValueError) as err:
                out.append(f"{name.target}: no signature to check ({err})")
                continue
            if have[: len(name.params)] != name.params:
                out.append(f"{name.target} ({name.used_in}): parameters changed: medsage relies on {name.params}, "
                           f"found {have}")
        if name.in_source is not None:
            try:
                source = inspect.getsource(obj)
            except (TypeError, OSError) as err:
                out.append(f"{name.target}: source unreadable ({err})")
                continue
            if name.in_source not in source:
                out.append(f"{name.target} ({name.does}, {name.used_in}): its source no longer holds "
                           f"{name.in_source!r}")
    return out


def check(engine: str) -> tuple[str, tuple[str, ...], list[str]]:
    """(installed version, versions checked, problems) for ``verl`` or ``ray``."""
    from importlib.metadata import version

    names, checked = {"verl": (VERL, VERL_CHECKED), "ray": (RAY, RAY_CHECKED)}[engine]
    return version(engine), checked, problems(names)
