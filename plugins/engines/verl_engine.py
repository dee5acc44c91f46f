"""verl's FSDP engine with the vision tower frozen (paper B.1), for every device medsage trains on.

verl 0.9.1 declares ``actor.freeze_vision_tower`` (``verl/workers/config/actor.py``) and never reads
it: the vision encoder trains. The engine below is verl's own ``FSDPEngineWithLMHead`` whose freshly
loaded module has its vision tower's parameters set to ``requires_grad=False`` before FSDP wraps it,
so the optimiser never sees them (AdamW skips parameters without a gradient: the weights stay
bit-identical). ``medsage rl`` turns it on with ``MEDSAGE_FREEZE_VISION_TOWER=1`` in the Ray
runtime environment of verl's workers (verl hands its engine no actor config to read a flag from).

Registered in verl's ``EngineRegistry`` under the vendor key ``(cuda, nvidia)``, which verl looks up
before its own device-only ``cuda`` entry; the CPU route registers its subclass for ``cpu``.
"""

from __future__ import annotations

import os

from verl.workers.engine.base import EngineRegistry
from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead

FREEZE_ENV = "MEDSAGE_FREEZE_VISION_TOWER"
# Where Hugging Face vision-language models keep their vision encoder (Qwen2/2.5-VL: model.visual).
VISION_PREFIXES = ("visual.", "model.visual.", "vision_tower.", "model.vision_tower.", "vision_model.")


def vision_parameter_names(module) -> list[str]:
    return [n for n, _ in module.named_parameters() if n.startswith(VISION_PREFIXES)]


def freeze_vision_tower(module) -> int:
    """Stop gradients into the vision encoder; returns how many tensors were frozen."""
    names = set(vision_parameter_names(module))
    for name, param in module.named_parameters():
        if name in names:
            param.requires_grad_(False)
    return len(names)


class FrozenVisionFSDPEngine(FSDPEngineWithLMHead):
    def _build_module(self):
        module = super()._build_module()
        if os.environ.get(FREEZE_ENV) == "1" and not self.engine_config.forward_only:
            if not freeze_vision_tower(module):
                raise ValueError(f"{FREEZE_ENV}=1 but {type(module).__name__} has no vision tower parameters "
                                 f"under {VISION_PREFIXES}")
        return module


def register() -> None:
    backends = EngineRegistry._engines.get("language_model", {})
    if ("cuda", "nvidia") not in backends.get("fsdp2", {}):
        EngineRegistry.register(model_type="language_model", backend=["fsdp", "fsdp2"], device="cuda",
                                vendor="nvidia")(FrozenVisionFSDPEngine)
