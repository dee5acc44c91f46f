"""Stage commands as real Ray jobs on an embedded cluster bound to loopback only."""

from __future__ import annotations

import sys

import pytest

pytestmark = pytest.mark.slow


def ray_listeners() -> list[str]:
    """Listening TCP addresses of this machine's Ray processes."""
    import psutil

    out = []
    for conn in psutil.net_connections(kind="inet"):
        if conn.status != psutil.CONN_LISTEN or conn.pid is None:
            continue
        try:
            cmd = " ".join(psutil.Process(conn.pid).cmdline())
        except psutil.Error:
            continue
        if "ray" in cmd or "gcs_server" in cmd or "raylet" in cmd:
            out.append(conn.laddr.ip)
    return out


def test_embedded_cluster_runs_jobs_on_loopback_and_stops(tmp_path, monkeypatch):
    from medsage.launch.pipeline.ray_jobs import _reachable, ray_cluster, run_job, runtime_env_for

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    if _reachable("http://127.0.0.1:8265"):
        pytest.skip("a Ray cluster is already running on this machine; the embedded one would not start")
    artifact = tmp_path / "artifact.txt"
    with ray_cluster(num_cpus=1) as client:
        listening = ray_listeners()
        assert listening, "the embedded cluster listens somewhere"
        assert set(listening) <= {"127.0.0.1", "::1", "::ffff:127.0.0.1"}, listening

        code = f"import os, pathlib; pathlib.Path({str(artifact)!r}).write_text(os.environ['STAGE']); print('done')"
        ok = run_job(client, f"{sys.executable} -c \"{code}\"", tmp_path / "ok.log",
                     runtime_env=runtime_env_for(None, {"STAGE": "sft"}))
        assert ok.ok and ok.exit_code == 0
        assert artifact.read_text() == "sft"
        assert "done" in ok.log_path.read_text()

        bad = run_job(client, f"{sys.executable} -c \"import sys; print('broken recipe'); sys.exit(3)\"",
                      tmp_path / "bad.log")
        assert not bad.ok and bad.status == "FAILED" and bad.exit_code == 3
        assert "broken recipe" in bad.log_tail()
    assert ray_listeners() == []  # everything it started is gone


def test_runtime_env_for_a_virtualenv_and_uv(tmp_path):
    from medsage.launch.pipeline.ray_jobs import runtime_env_for

    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("")
    assert runtime_env_for(str(venv))["py_executable"] == str(venv / "bin" / "python")
    assert runtime_env_for("uv:verl==0.9.1,cachetools")["uv"] == ["verl==0.9.1", "cachetools"]
    with pytest.raises(FileNotFoundError, match="has no"):  # the interpreter is medsage.runtime.stage_python's
        runtime_env_for(str(tmp_path / "missing"))


def test_a_cluster_started_in_the_background_serves_jobs_until_closed(tmp_path, monkeypatch):
    import time

    from medsage.launch.pipeline.ray_jobs import ClusterStart, _reachable, run_job

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    if _reachable("http://127.0.0.1:8265"):
        pytest.skip("a Ray cluster is already running on this machine; the embedded one would not start")
    cluster = ClusterStart(num_cpus=1)
    try:
        assert cluster.embedded and not cluster.ready()  # the caller goes on while Ray starts
        client = cluster.client()
        assert cluster.ready()
        time.sleep(2)  # Ray's processes die with the thread that started them: it must still be there
        done = run_job(client, f"{sys.executable} -c \"print('after the start')\"", tmp_path / "job.log")
        assert done.ok and "after the start" in done.log_path.read_text()
    finally:
        cluster.close()
    assert ray_listeners() == []


# Run in a child process with HOME in tmp_path, so the token file Ray writes at the start is this test's own (Ray's
# token loader reads HOME once per process).
_PRIVATE_START = """
import json, os, sys
import psutil
from medsage.launch.pipeline import ray_jobs
ray_jobs.existing_cluster = lambda address=None: None  # always the embedded cluster, whatever else runs here
with ray_jobs.ray_cluster(num_cpus=1):
    temp = {a.split("=", 1)[1] for p in psutil.Process().children(recursive=True) for a in p.cmdline()
            if a.startswith("--temp_dir=")}
    parents = {os.path.dirname(t) for t in temp}
    print(json.dumps({"temp": sorted(temp), "modes": {t: oct(os.stat(t).st_mode & 0o777) for t in parents}}))
"""


def test_the_embedded_cluster_keeps_its_folders_and_token_private(tmp_path):
    import json
    import os
    import subprocess

    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")} | {"HOME": str(home)}
    proc = subprocess.run([sys.executable, "-c", _PRIVATE_START], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(seen["temp"]) == 1 and not seen["temp"][0].startswith("/tmp/ray/"), seen  # not Ray's shared default
    parent = os.path.dirname(seen["temp"][0])
    assert seen["modes"] == {parent: "0o700"}, seen  # Ray opens its own folder to 0777: its parent is private
    assert not os.path.exists(parent)  # removed when the cluster stopped
    token = home / ".ray" / "auth_token"
    assert token.exists() and token.stat().st_mode & 0o777 == 0o600  # Ray wrote it 0644


def test_a_cluster_that_cannot_start_fails_the_stage_under_it_in_one_line(tmp_path, monkeypatch):
    import json

    from medsage.launch.pipeline import ray_jobs
    from medsage.launch.pipeline.dag import plan_stages, run_stages

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray_jobs, "existing_cluster", lambda address=None: None)  # never another user's cluster
    # `rl` never runs here while the cluster starts (verl joins it): its stage waits for a cluster Ray refuses
    stages = plan_stages({"first": {"argv": ["--help"]}, "second": {"argv": ["rl", "{first}"]}}, tmp_path / "store")
    with pytest.raises(ray_jobs.ClusterError, match=r"did not start \(num_cpus=many\): AssertionError"):
        run_stages(stages, lambda: ray_jobs.ClusterStart(num_cpus="many"), resume_hint="medsage pipeline")
    states = {s.name: json.loads((s.out_dir / "stage.json").read_text()) for s in stages if s.out_dir.exists()}
    assert "running" not in [m["status"] for m in states.values()], states
    failed = [m for m in states.values() if m["status"] == "failed"]
    assert len(failed) == 1 and "did not start" in failed[0]["error"], states
