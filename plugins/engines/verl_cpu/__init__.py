"""verl 0.9.1 on a machine without accelerators: what ``medsage rl`` loads on a ``cpu`` cluster recipe.

verl is GPU-only by design in a few places, each with an extension point this package fills:

- platform: none for CPUs (detection falls back to NVIDIA) -> ``platform.PlatformCPU`` registered with
  ``PlatformRegistry`` and selected by ``VERL_PLATFORM``. verl imports ``VERL_USE_EXTERNAL_MODULES``
  (this package) *before* its ``verl.plugins`` entry points, which is required: the first lookup of
  the device freezes it, and medsage's entry point imports modules that look it up;
- training engine: FSDP is registered for cuda/npu only -> ``CPUFSDPEngine`` for ``cpu``: verl's FSDP
  engine with the frozen vision tower (``medsage.plugins.engines.verl_engine``) and no pinned memory
  for the reference model's offload policy (pinning needs CUDA); registered when verl imports its
  worker module, like the two below (``medsage.plugins.engines.after_import``);
- process group: verl asks for ``cpu:gloo,<device>:<backend>``, i.e. ``cpu:gloo,cpu:gloo``, which
  torch rejects -> the worker's group is opened with plain ``gloo`` first; verl then skips its own;
- rollout: vLLM/SGLang/TRT-LLM only -> ``rollout.HFReplica`` (``transformers.generate``) registered with
  ``RolloutReplicaRegistry`` as ``hf_cpu``, its adapter with verl's rollout-class table.

Resources (a logical ``GPU`` per rank, enough logical CPUs for verl's placement groups, Ray bound to
127.0.0.1) and the engine settings FSDP needs on CPU (FSDP2, fp32, sdpa attention, no remove-padding,
no torch.compile) are verl overrides: ``medsage.plugins.engines.verl.cpu_overrides``.
"""

from __future__ import annotations

import functools
from contextlib import contextmanager

# 1. The platform, before anything below asks verl for the device.
from medsage.plugins.engines.verl_cpu.platform import PLATFORM_NAME, PlatformCPU  # noqa: F401

from medsage.plugins.engines.after_import import when_imported
from medsage.plugins.engines.verl_cpu_env import ROLLOUT_NAME


@contextmanager
def _unpinned_offload(fsdp):
    """verl builds the reference model's FSDP2 offload policy with ``pin_memory=True``."""
    original = fsdp.CPUOffloadPolicy
    fsdp.CPUOffloadPolicy = lambda *args, **kwargs: original(*args, **{**kwargs, "pin_memory": False})
    try:
        yield
    finally:
        fsdp.CPUOffloadPolicy = original


def _gloo_first(init):
    @functools.wraps(init)
    def initialize(timeout_second=None, backend=None):
        return init(timeout_second=timeout_second, backend=backend or "gloo")

    return initialize


def _load_replica():
    from medsage.plugins.engines.verl_cpu.rollout import HFReplica

    return HFReplica


# 2. The rest where verl imports what it extends (``after_import``): the engine and the process group in
#    the trainer ranks (verl's worker module), the rollout's classes where verl looks them up. Importing
#    verl's engines here would cost every verl process of the run about 5 s of a core.
def _extend_workers(engine_workers) -> None:
    from medsage.plugins.engines.verl_engine import FrozenVisionFSDPEngine
    from verl.workers.engine.base import EngineRegistry
    from verl.workers.engine.fsdp import transformer_impl as fsdp

    class CPUFSDPEngine(FrozenVisionFSDPEngine):
        def _build_fsdp_module(self, module):
            with _unpinned_offload(fsdp):
                return super()._build_fsdp_module(module)

    if "cpu" not in EngineRegistry._engines.get("language_model", {}).get("fsdp2", {}):
        EngineRegistry.register(model_type="language_model", backend=["fsdp", "fsdp2"], device="cpu")(CPUFSDPEngine)
    if not getattr(engine_workers.initialize_global_process_group_ray, "_medsage_gloo", False):
        engine_workers.initialize_global_process_group_ray = _gloo_first(engine_workers.initialize_global_process_group_ray)
        engine_workers.initialize_global_process_group_ray._medsage_gloo = True


def _register_replica(replica) -> None:
    replica.RolloutReplicaRegistry.register(ROLLOUT_NAME, _load_replica)


def _register_adapter(rollout_base) -> None:
    rollout_base._ROLLOUT_REGISTRY[(ROLLOUT_NAME, "async")] = "medsage.plugins.engines.verl_cpu.rollout.HFServerAdapter"


when_imported("verl.workers.engine_workers", _extend_workers)
when_imported("verl.workers.rollout.replica", _register_replica)
when_imported("verl.workers.rollout.base", _register_adapter)
