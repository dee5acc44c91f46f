"""verl's platform for a machine with CPUs only (``VERL_PLATFORM=medsage_cpu``).

verl 0.9.1 knows CUDA, NPU and ROCm; with none visible its detection falls back to NVIDIA and every
``torch.cuda`` call fails. This platform answers verl's device questions for the CPU: device ``cpu``,
collectives over gloo, no IPC, no profiler ranges. Ray still schedules verl's workers on the ``GPU``
resource, which ``medsage rl`` declares as a logical resource of the local cluster (one per rank).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from verl.plugin.platform.platform_base import PlatformBase
from verl.plugin.platform.platform_manager import PlatformRegistry

from medsage.plugins.engines.verl_cpu_env import PLATFORM_NAME


class _CPUDevice:
    """``torch.cpu`` plus the ``torch.cuda`` calls verl makes on its device module (memory, RNG)."""

    def __getattr__(self, name):
        return getattr(torch.cpu, name)

    @staticmethod
    def mem_get_info(device=None):
        import psutil

        vm = psutil.virtual_memory()
        return vm.available, vm.total

    memory_allocated = memory_reserved = max_memory_allocated = max_memory_reserved = staticmethod(lambda *a, **k: 0)
    empty_cache = ipc_collect = set_per_process_memory_fraction = staticmethod(lambda *a, **k: None)
    get_rng_state = staticmethod(lambda *a, **k: torch.get_rng_state())
    set_rng_state = staticmethod(lambda state, *a, **k: torch.set_rng_state(state))
    get_device_name = staticmethod(lambda *a, **k: "cpu")


_DEVICE = _CPUDevice()


@PlatformRegistry.register(platform=PLATFORM_NAME)
class PlatformCPU(PlatformBase):
    device_name = "cpu"
    vendor_name = "medsage"

    @property
    def device_module(self):
        return _DEVICE

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check=False) -> bool:
        return False  # never auto-detected: only VERL_PLATFORM selects it

    def current_device(self):
        return "cpu"  # verl passes it to .to(...) as the device: an int would mean cuda:<int>

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index: int) -> None:
        return None

    def synchronize(self, device_index=None) -> None:
        return None

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        return None

    def empty_cache(self) -> None:
        return None

    def get_device_capability(self, device_index: int = 0):
        return None, None

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        return "CUDA_VISIBLE_DEVICES"  # what Ray sets for the logical GPU resource

    @contextmanager
    def nvtx_range(self, msg: str):
        yield

    def profiler_start(self) -> None:
        return None

    def profiler_stop(self) -> None:
        return None

    def ray_resource_name(self) -> str:
        return "GPU"

    def ray_noset_envvars(self) -> list[str]:
        return []

    def is_ipc_supported(self) -> bool:
        return False

    def cudart(self):
        return None
