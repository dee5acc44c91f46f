"""The CPU route's request router: verl's router plugin (``rollout.router_config_path``) without verl.

verl's agent loops ask a router actor which rollout server takes each request. Its default router
(``verl.workers.rollout.router.GlobalRequestLoadBalancer``) lives in verl, so its Ray process imports
verl (about 8 s of a core, on the start-up's critical path: the agent-loop workers wait for it). The
CPU route's servers (``medsage.plugins.engines.verl_cpu.rollout``) hold no prefix cache, so verl's
sticky sessions buy nothing there: least in-flight requests is the whole policy, and this module
imports nothing of verl's. ``medsage rl`` selects it on a cpu cluster recipe (``router_file``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class LeastBusyRouter:
    """verl's router interface (the constructor of a router plugin, ``require_*_fields``, ``acquire_server``,
    ``release_server``): each request to the server with the fewest requests in flight."""

    def __init__(self, servers: dict[str, Any], config: dict | None = None):
        if not servers:
            raise ValueError("the router got no rollout servers")
        self._servers = dict(servers)
        self._inflight = dict.fromkeys(servers, 0)

    def require_acquire_fields(self) -> list[str]:
        return []

    def require_release_fields(self) -> list[str]:
        return []

    def acquire_server(self, request_id: str) -> tuple[str, Any]:
        server_id = min(self._inflight, key=self._inflight.__getitem__)
        self._inflight[server_id] += 1
        return server_id, self._servers[server_id]

    def release_server(self, server_id: str) -> None:
        if self._inflight.get(server_id, 0) > 0:
            self._inflight[server_id] -= 1


def router_file(out_dir: Path) -> Path:
    """The router plugin's YAML for verl (``router_class``, the one key verl reads), written in ``out_dir``."""
    from medsage.io import atomic_write_text

    return atomic_write_text(out_dir / "router.yaml", f"router_class: {__name__}.{LeastBusyRouter.__qualname__}\n")
