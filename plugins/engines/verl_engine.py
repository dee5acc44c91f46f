"""Two fixes to verl 0.9.1 that every medsage run needs, on GPU as on CPU.

1. mRoPE positions of equal-length batches (``ragged_positions``). verl packs a batch for its workers
   with ``left_right_2_no_padding`` (``verl/workers/utils/padding.py``): the (4, L_i) mRoPE position
   ids of a VLM become a jagged nested tensor whose ragged dimension is L (dim 2), and the workers
   force ``_ragged_idx=2`` after unpickling (``tensordict_utils.maybe_fix_3d_position_ids``). When
   every L_i is equal, torch makes dim 1 (the 4) the ragged one instead, and ``update_actor`` fails
   on the forced index. The wrapper rebuilds such position ids with their ragged dimension at 2.

2. The vision tower frozen (paper B.1), below.

verl 0.9.1 declares ``actor.freeze_vision_tower`` (``verl/workers/config/actor.py``) and never reads
it: the vision encoder trains. The engine below is verl's own ``FSDPEngineWithLMHead`` whose freshly
loaded module has its vision tower's parameters set to ``requires_grad=False`` before FSDP wraps it,
so the optimiser never sees them (AdamW skips parameters without a gradient: the weights stay
bit-identical). ``medsage rl`` turns it on with ``MEDSAGE_FREEZE_VISION_TOWER=1`` in the Ray
runtime environment of verl's workers (verl hands its engine no actor config to read a flag from).

Registered in verl's ``EngineRegistry`` under the vendor key ``(cuda, nvidia)``, which verl looks up
before its own device-only ``cuda`` entry, in processes whose environment has ``FREEZE_ENV`` (medsage's
runs; any other verl run keeps verl's engine); the CPU route registers its subclass for ``cpu``. The
mRoPE fix is installed with medsage's trainer hooks (``verl_plugin.install_trainer_hooks``).
"""

from __future__ import annotations

import functools
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


def _ragged_at_2(positions):
    """(B, 4, j) jagged position ids: the same values with L (dim 2) as the ragged dimension."""
    import torch

    rows = positions.unbind()
    lengths = torch.tensor([0] + [r.shape[-1] for r in rows])
    return torch.nested.nested_tensor_from_jagged(torch.cat(rows, dim=-1), offsets=lengths.cumsum(0), jagged_dim=2)


def ragged_positions(pack):
    """Wrap verl's ``left_right_2_no_padding`` so 3-D position ids always come out ragged in dim 2."""
    @functools.wraps(pack)
    def packed(data):
        out = pack(data)
        pos = out.get("position_ids", None)
        if pos is not None and getattr(pos, "is_nested", False) and pos.dim() == 3 and pos._ragged_idx != 2:
            out["position_ids"] = _ragged_at_2(pos)
        return out

    return packed


def register() -> None:
    """The frozen-tower engine for verl's FSDP workers, in medsage's runs only: ``medsage rl`` puts
    ``FREEZE_ENV`` (1 or 0) in their environment; a verl run without it keeps verl's own engine."""
    if FREEZE_ENV not in os.environ:
        return
    backends = EngineRegistry._engines.get("language_model", {})
    if ("cuda", "nvidia") not in backends.get("fsdp2", {}):
        EngineRegistry.register(model_type="language_model", backend=["fsdp", "fsdp2"], device="cuda",
                                vendor="nvidia")(FrozenVisionFSDPEngine)
