"""Run stage commands as Ray jobs (Ray Jobs API) on the configured cluster.

``ray_cluster(address)`` yields a Jobs API client. With no address it uses a Ray cluster already
running on this machine (``RAY_ADDRESS`` or the dashboard on 127.0.0.1:8265); when none is running it
starts an embedded one bound to 127.0.0.1 only and stops exactly what it started on exit.

Why ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` for the embedded cluster: Ray resolves 127.0.0.1 to the
machine's interface address (``resolve_ip_for_localhost``) unless cluster mode is off, and then its
dashboard agent and runtime-env agent listen on that interface. With it off, every component binds to
loopback.

Why the embedded cluster is lean (``_lean``): the pipeline only submits jobs, so its dashboard loads
the Jobs and Node modules alone (by default it starts nine module processes: metrics, serve, train,
state, ...), no worker is prestarted for the pipeline's own driver, and usage stats are off. On a 2-core
machine that is most of Ray's start-up time and of its background CPU while stages run.

``ClusterStart`` starts the embedded cluster on a background thread, so stages can run meanwhile.

A job's wait has no fixed sleep: its status is polled at an interval that starts at 20 ms and grows
to ``poll_s``, so a short stage is seen to end within milliseconds and a long one costs few requests.
``submit`` and ``wait`` are ``run_job``'s two halves, for a caller that submits the next job early
(the pipeline does: see ``launch/pipeline/dag.py``).
"""

from __future__ import annotations

import os
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from medsage.runtime import stage_python

DEFAULT_LOCAL_DASHBOARD = "http://127.0.0.1:8265"


@dataclass
class JobResult:
    submission_id: str
    status: str  # SUCCEEDED | FAILED | STOPPED
    exit_code: int | None
    message: str
    log_path: Path

    @property
    def ok(self) -> bool:
        return self.status == "SUCCEEDED"

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def _reachable(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/api/version", timeout=1) as resp:
            return resp.status == 200
    except OSError:
        return False


def _loopback_only() -> None:
    """Keep an embedded cluster on 127.0.0.1 (see module docstring).

    The variable reaches the processes Ray spawns; the constant is patched as well because this
    process may have imported ray (which reads the variable once) before we got here.
    """
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray._private.ray_constants as ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False


# The Jobs API is all the pipeline uses of the dashboard (see module docstring).
_DASHBOARD_MODULES = "JobHead,NodeHead"  # NodeHead records the head node id, where JobHead finds its agent
_LEAN_ENV = {"RAY_prestart_worker_first_driver": "0", "RAY_USAGE_STATS_ENABLED": "0"}
# Ray releases whose private process launcher the dashboard trim below was checked against; on any
# other the embedded cluster starts Ray's full dashboard (a slower start, nothing else changes).
LEAN_DASHBOARD_RAY = ("2.60.",)


def _lean_dashboard_hook():
    """``services.start_ray_process``, the private function to wrap, when this Ray is one it was checked on."""
    import inspect

    import ray
    import ray._private.services as services
    from ray._private import ray_constants

    if not ray.__version__.startswith(LEAN_DASHBOARD_RAY):
        return None
    start = getattr(services, "start_ray_process", None)
    try:
        head = list(inspect.signature(start).parameters)[:2]
    except (TypeError, ValueError):
        return None
    if head != ["command", "process_type"] or not hasattr(ray_constants, "PROCESS_TYPE_DASHBOARD"):
        return None
    return start


@contextmanager
def _lean():
    """Start the embedded cluster with only the Jobs and Node modules in its dashboard and no prestarted workers.

    Ray has no public setting for the dashboard's modules (``--modules-to-load`` exists on the
    dashboard's own command line only), so on a Ray release listed in ``LEAN_DASHBOARD_RAY`` its
    command is extended while this process starts it; on any other Ray gets its full dashboard.
    """
    import ray._private.services as services
    from ray._private import ray_constants

    start = _lean_dashboard_hook()
    if start is None:
        import ray

        print(f"medsage: Ray {ray.__version__} is not one the lean dashboard was checked on "
              f"({', '.join(v + 'x' for v in LEAN_DASHBOARD_RAY)}): starting Ray's full dashboard", flush=True)

    def start_lean(command, process_type, *args, **kwargs):
        if process_type == ray_constants.PROCESS_TYPE_DASHBOARD and not any("--modules-to-load" in c for c in command):
            command = [*command, f"--modules-to-load={_DASHBOARD_MODULES}"]
        return start(command, process_type, *args, **kwargs)

    saved = {k: os.environ.get(k) for k in _LEAN_ENV}
    os.environ.update(_LEAN_ENV)
    if start is not None:
        services.start_ray_process = start_lean
    try:
        yield
    finally:
        if start is not None:
            services.start_ray_process = start
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def existing_cluster(address: str | None = None) -> str | None:
    """The dashboard address of the cluster to use: ``address``, an http ``RAY_ADDRESS``, or one running on
    127.0.0.1; None when an embedded cluster must be started."""
    address = address or (os.environ.get("RAY_ADDRESS", "") if os.environ.get("RAY_ADDRESS", "").startswith("http")
                          else None)
    if not address and _reachable(DEFAULT_LOCAL_DASHBOARD):
        address = DEFAULT_LOCAL_DASHBOARD
    return address


@contextmanager
def ray_cluster(address: str | None = None, *, num_cpus: int | None = None, num_gpus: int | None = None,
                temp_dir: str | Path | None = None) -> Iterator["JobSubmissionClient"]:  # noqa: F821
    """A Jobs API client for ``address``, an already running local cluster, or an embedded one."""
    address = existing_cluster(address)
    if address:
        from ray.job_submission import JobSubmissionClient

        yield JobSubmissionClient(address)
        return

    _loopback_only()
    import ray
    from ray.job_submission import JobSubmissionClient

    with _lean():
        ctx = ray.init(
            _node_ip_address="127.0.0.1", include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=None,
            num_cpus=num_cpus, num_gpus=num_gpus, _temp_dir=str(temp_dir) if temp_dir else None, configure_logging=False,
            log_to_driver=False, namespace="medsage",
        )
    client = JobSubmissionClient(f"http://{ctx.dashboard_url}")
    try:
        yield client
    finally:
        ray.shutdown()


class ClusterStart:
    """``ray_cluster(...)``, an embedded cluster's start running on a background thread.

    Starting Ray takes seconds (13 s on a 2-core machine); the pipeline runs its first stages as local
    processes meanwhile (``launch/pipeline/local_jobs.py``). An existing cluster is connected to at once.
    The thread lives until ``close``, which it waits for to stop the cluster: Ray ties its processes to
    the thread that started them (a parent-death signal fires when that *thread* ends).
    """

    def __init__(self, address: str | None = None, **kwargs):
        import threading

        self.embedded = existing_cluster(address) is None
        self._context = ray_cluster(address, **kwargs)
        self._client, self._error = None, None
        self._up, self._stop = threading.Event(), threading.Event()
        self._thread = None
        if not self.embedded:
            self._client = self._context.__enter__()
            self._up.set()
            return
        _exit_on_sigterm()  # what ray.init does on the main thread; here it runs on another
        self._thread = threading.Thread(target=self._run, name="medsage-ray-cluster", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._client = self._context.__enter__()
        except BaseException as err:  # noqa: BLE001 - re-raised by client(), on the pipeline's thread
            self._error = err
            return
        finally:
            self._up.set()
        self._stop.wait()
        self._context.__exit__(None, None, None)

    def ready(self) -> bool:
        return self._up.is_set()

    def client(self):
        """The Jobs API client, once the cluster is up (its start's error, if it failed)."""
        self._up.wait()
        if self._error is not None:
            raise self._error
        return self._client

    def close(self) -> None:
        if self._thread is None:
            self._context.__exit__(None, None, None)
            return
        self._stop.set()
        self._thread.join()


def _exit_on_sigterm() -> None:
    """A SIGTERM ends the pipeline through its exit handlers (which stop the cluster), as ray.init arranges
    on the main thread; its warning that it did not (started on another thread) is then silenced."""
    import logging
    import signal
    import sys
    import threading

    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))
        logging.getLogger("ray._private.worker").addFilter(
            lambda record: "SIGTERM handler is not set" not in record.getMessage())


def submit(client, entrypoint: str, *, runtime_env: dict | None = None, submission_id: str | None = None,
           patience_s: float = 180.0) -> str:
    """Submit ``entrypoint`` (a shell command) as a job; its submission id.

    Just after a cluster's start its dashboard may not know the node's agent yet and answers "No
    available agent to submit job, please try again later": that answer is retried for ``patience_s`` (a loaded
    2-core machine starting a second cluster took over 60 s).
    """
    deadline = time.monotonic() + patience_s
    while True:
        try:
            return client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env or {}, submission_id=submission_id)
        except RuntimeError as err:
            if "No available agent" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def wait(client, sid: str, log_path: str | Path, *, poll_s: float = 0.2, echo: bool = False) -> JobResult:
    """Wait for job ``sid`` to end (no fixed sleep: see module docstring); save its whole log to ``log_path``."""
    from medsage.io import atomic_write_text

    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    printed, interval = 0, 0.02
    while True:
        status = client.get_job_status(sid)
        if echo:
            logs = client.get_job_logs(sid)
            print(logs[printed:], end="", flush=True)
            printed = len(logs)
        if status.is_terminal():
            break
        time.sleep(interval)
        interval = min(poll_s, interval * 1.5)
    atomic_write_text(log_path, client.get_job_logs(sid))
    info = client.get_job_info(sid)
    return JobResult(sid, str(status.value if hasattr(status, "value") else status),
                     getattr(info, "driver_exit_code", None), info.message or "", log_path)


def run_job(client, entrypoint: str, log_path: str | Path, *, runtime_env: dict | None = None,
            submission_id: str | None = None, poll_s: float = 0.2, echo: bool = False) -> JobResult:
    """Submit ``entrypoint`` (a shell command), wait for it, save its whole log to ``log_path``."""
    sid = submit(client, entrypoint, runtime_env=runtime_env, submission_id=submission_id)
    return wait(client, sid, log_path, poll_s=poll_s, echo=echo)


def runtime_env_for(env: str | None, env_vars: dict[str, str] | None = None) -> dict:
    """Ray runtime_env for a stage environment: a virtualenv folder or ``uv:pkg1,pkg2``; None: this one.

    The entrypoint itself is run with the environment's python (``medsage.runtime.stage_python``); ``py_executable``
    makes the job's Ray workers (verl's actors) use it too.
    """
    out: dict = {"env_vars": dict(env_vars or {})}
    if env is None:
        return out
    if env.startswith("uv:"):
        out["uv"] = [p for p in env[3:].split(",") if p]
        return out
    out["py_executable"] = stage_python(env)
    return out
