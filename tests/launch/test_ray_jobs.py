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
