"""What keeps the CPU route's start-up short: medsage's additions to verl are registered where verl imports what
they extend, and the CPU route's request router imports nothing of verl's (bench/bench_rl_step.py times the run)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import yaml

from medsage.plugins.engines.after_import import when_imported
from medsage.plugins.engines.verl_router import LeastBusyRouter, router_file


def test_when_imported_runs_after_the_import_and_at_once_for_an_imported_module(tmp_path, monkeypatch):
    (tmp_path / "pkg_after").mkdir()
    (tmp_path / "pkg_after" / "__init__.py").write_text("")
    (tmp_path / "pkg_after" / "late.py").write_text("VALUE = 41\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen = []
    when_imported("pkg_after.late", lambda m: seen.append(m.VALUE + 1))  # the module body has run by then
    assert seen == []
    import pkg_after.late  # noqa: F401

    assert seen == [42]
    when_imported("pkg_after.late", lambda m: seen.append(m.__name__))
    assert seen == [42, "pkg_after.late"]
    import inspect

    assert "VALUE = 41" in inspect.getsource(sys.modules["pkg_after.late"])  # tracebacks still read its source
    for name in ("pkg_after.late", "pkg_after"):
        sys.modules.pop(name)


def test_the_router_sends_each_request_to_the_least_busy_server():
    router = LeastBusyRouter({"a": "server-a", "b": "server-b"}, {"router_class": "..."})
    assert router.require_acquire_fields() == [] and router.require_release_fields() == []
    first, second = router.acquire_server(request_id="r1"), router.acquire_server(request_id="r2")
    assert {first[0], second[0]} == {"a", "b"} and dict([first, second]) == {"a": "server-a", "b": "server-b"}
    router.release_server(server_id="b")
    assert router.acquire_server(request_id="r3") == ("b", "server-b")
    with pytest.raises(ValueError, match="no rollout servers"):
        LeastBusyRouter({})


def test_the_cpu_route_selects_the_router_and_it_imports_no_verl(tmp_path):
    from medsage.plugins.engines.verl import cpu_overrides

    path = cpu_overrides(tmp_path)["actor_rollout_ref.rollout.router_config_path"]
    cls = yaml.safe_load(open(path))["router_class"]
    assert path == str(router_file(tmp_path)) and cls.endswith(".LeastBusyRouter")
    module = cls.rpartition(".")[0]
    # the router's own Ray process imports its module only: verl there would cost seconds of a core
    probe = f"import sys, {module}; print(sorted(m for m in sys.modules if m.split('.')[0] == 'verl'))"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip() == "[]"


def test_verl_processes_import_the_engines_and_agent_loop_only_where_verl_does(tmp_path):
    pytest.importorskip("verl")
    from medsage.plugins.engines import verl_cpu_env
    from medsage.plugins.engines.verl_engine import FREEZE_ENV

    probe = textwrap.dedent("""
        import sys
        import verl
        heavy = ["verl.workers.engine_workers", "verl.workers.engine.fsdp.transformer_impl",
                 "verl.experimental.agent_loop.agent_loop", "verl.trainer.ppo.core_algos"]
        print([m for m in heavy if m in sys.modules])
        import verl.workers.engine_workers as workers
        from verl.workers.engine.base import EngineRegistry
        fsdp2 = EngineRegistry._engines["language_model"]["fsdp2"]
        print(fsdp2["cpu"].__name__, fsdp2[("cuda", "nvidia")].__name__,
              workers.initialize_global_process_group_ray._medsage_gloo)
        from verl.workers.rollout.replica import get_rollout_replica_class
        print(get_rollout_replica_class("hf_cpu").__name__)
        from verl.trainer.ppo.core_algos import get_adv_estimator_fn
        from verl.experimental.agent_loop.agent_loop import _agent_loop_registry
        print(get_adv_estimator_fn("medsage_self_check").__name__, "medsage_self_check" in _agent_loop_registry)
    """)
    env = {**__import__("os").environ, **verl_cpu_env.ENV, FREEZE_ENV: "1"}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split("\n")[:4] == ["[]", "CPUFSDPEngine FrozenVisionFSDPEngine True", "HFReplica",
                                          "compute_self_check_advantage True"]
