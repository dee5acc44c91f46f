"""verl 0.9.1 on a machine without accelerators: what ``medsage rl`` loads on a ``cpu`` cluster recipe.

verl is GPU-only by design in a few places, each with an extension point this package fills:

- platform: none for CPUs (detection falls back to NVIDIA) -> ``platform.PlatformCPU`` registered with
  ``PlatformRegistry`` and selected by ``VERL_PLATFORM``. verl imports ``VERL_USE_EXTERNAL_MODULES``
  (this package) *before* its ``verl.plugins`` entry points, which is required: the first lookup of
  the device freezes it, and medsage's entry point imports modules that look it up;
- training engine: FSDP is registered for cuda/npu only -> ``CPUFSDPEngine`` for ``cpu``: verl's FSDP
  engine with the frozen vision tower (``medsage.plugins.engines.verl_engine``) and no pinned memory
  for the reference model's offload policy (pinning needs CUDA);
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

import verl.workers.engine_workers as _engine_workers  # noqa: E402
from verl.workers.engine.base import EngineRegistry  # noqa: E402
from verl.workers.engine.fsdp import transformer_impl as _fsdp  # noqa: E402
from verl.workers.rollout import base as _rollout_base  # noqa: E402
from verl.workers.rollout.replica import RolloutReplicaRegistry  # noqa: E402

from medsage.plugins.engines.verl_engine import FrozenVisionFSDPEngine  # noqa: E402
from medsage.plugins.engines.verl_cpu.rollout import ROLLOUT_NAME  # noqa: E402



@contextmanager
def _unpinned_offload():
    """verl builds the reference model's FSDP2 offload policy with ``pin_memory=True``."""
    original = _fsdp.CPUOffloadPolicy
    _fsdp.CPUOffloadPolicy = lambda *args, **kwargs: original(*args, **{**kwargs, "pin_memory": False})
    try:
        yield
    finally:
        _fsdp.CPUOffloadPolicy = original


class CPUFSDPEngine(FrozenVisionFSDPEngine):
    def _build_fsdp_module(self, module):
        with _unpinned_offload():
            return super()._build_fsdp_module(module)


def _gloo_first(init):
    @functools.wraps(init)
    def initialize(timeout_second=None, backend=None):
        return init(timeout_second=timeout_second, backend=backend or "gloo")

    return initialize


def _load_replica():
    from medsage.plugins.engines.verl_cpu.rollout import HFReplica

    return HFReplica


if "cpu" not in EngineRegistry._engines.get("language_model", {}).get("fsdp2", {}):
    EngineRegistry.register(model_type="language_model", backend=["fsdp", "fsdp2"], device="cpu")(CPUFSDPEngine)
if not getattr(_engine_workers.initialize_global_process_group_ray, "_medsage_gloo", False):
    _engine_workers.initialize_global_process_group_ray = _gloo_first(_engine_workers.initialize_global_process_group_ray)
    _engine_workers.initialize_global_process_group_ray._medsage_gloo = True
RolloutReplicaRegistry.register(ROLLOUT_NAME, _load_replica)
_rollout_base._ROLLOUT_REGISTRY[(ROLLOUT_NAME, "async")] = "medsage.plugins.engines.verl_cpu.rollout.HFServerAdapter"
