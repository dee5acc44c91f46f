"""Run a stage command as a local process while the pipeline's embedded Ray cluster is still starting.

The embedded cluster runs on this machine, so a job on it is a process here too: what a local run
leaves out is only Ray's bookkeeping. A stage runs locally only if the cluster is not up yet when its
turn comes, and never one that uses Ray itself (``medsage rl``: verl joins the pipeline's cluster) or
needs Ray to build its environment (``uv:``). Its result has a Ray job's shape (``ray_jobs.JobResult``):
status SUCCEEDED or FAILED, exit status, the whole log in the stage folder.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from collections.abc import Callable

from medsage.launch.pipeline.ray_jobs import JobResult

RAY_VERBS = {"rl"}  # medsage verbs whose command starts or joins a Ray cluster itself


def may_run_locally(argv: list[str], env: str | None) -> bool:
    return bool(argv) and argv[0] not in RAY_VERBS and not (env or "").startswith("uv:")


def run_local(entrypoint: str, env_vars: dict[str, str], log_path: str | Path, *,
              tick: Callable[[], None] = lambda: None, poll_s: float = 0.2) -> JobResult:
    """Run ``entrypoint`` (a shell command, as a Ray job's) here; ``tick`` is called while it runs."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    partial = log_path.with_name(log_path.name + ".part")  # the log as it grows; the whole one replaces it
    with open(partial, "wb") as log:
        proc = subprocess.Popen(["/bin/sh", "-c", entrypoint], stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, env={**os.environ, **env_vars})
        interval = 0.02
        try:
            while proc.poll() is None:
                tick()
                time.sleep(interval)
                interval = min(poll_s, interval * 1.5)
        finally:
            if proc.poll() is None:  # the pipeline is being stopped: the stage goes with it
                proc.terminate()
                proc.wait()
        log.flush()
        os.fsync(log.fileno())
    os.replace(partial, log_path)
    code = proc.returncode
    return JobResult(f"local-{proc.pid}", "SUCCEEDED" if code == 0 else "FAILED", code, "", log_path)
