"""Run stage commands as Ray jobs (Ray Jobs API) on the configured cluster.

``ray_cluster(address)`` yields a Jobs API client. ``address`` is any form Ray's Jobs API takes: a Ray Client
address (``ray://head:10001``), the dashboard (``http://head:8265``) or the GCS (``head:6379``). With none it uses
``RAY_ADDRESS`` or a Ray cluster already running on this machine (the dashboard on 127.0.0.1:8265); when none
is running it starts an embedded one bound to 127.0.0.1 only and stops exactly what it started on exit.

Inside a Ray job (a pipeline stage) ``RAY_ADDRESS`` is the job's own cluster, which every Ray call of the
stage joins (``in_ray_job``); a command run outside any job with an address is submitted there as a job
(``launch/pipeline/submit.py``), so a ``ray.init`` never sees an address it does not take (``http://``).

Why ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` for the embedded cluster: Ray resolves 127.0.0.1 to the
machine's interface address (``resolve_ip_for_localhost``) unless cluster mode is off, and then its
dashboard agent and runtime-env agent listen on that interface. With it off, every component binds to
loopback.

Why the embedded cluster is lean (``_lean``): the pipeline only submits jobs, so its dashboard loads
the Jobs and Node modules alone (by default it starts nine module processes: metrics, serve, train,
state, ...), no worker is prestarted for the pipeline's own driver, and usage stats are off. On a 2-core
machine that is most of Ray's start-up time and of its background CPU while stages run.

Why the embedded cluster has a private temp folder: Ray's default, ``/tmp/ray``, is shared by every user of the
machine and its session folders (logs, the runtime environments, the jobs' working folders, unix sockets) are
created world-readable (0777/0644). The embedded cluster's is ``ray`` in a fresh ``tempfile.mkdtemp`` folder
(mode 0700, under ``$TMPDIR``, removed when it stops: Ray opens the folder it is given itself to 0777, so the
privacy is its parent's); not a folder of ``run_root``, because Ray's unix socket paths under it
(``<temp>/session_<date>_<pid>/sockets/plasma_store``) must stay within the kernel's ~107 bytes, which a deep
``run_root`` would pass. A token file Ray writes at this start (``~/.ray/auth_token``, with the umask's 0644) is
made this user's alone (0600); a token the user already had is left as it is (docs/multinode.md says what a
shared machine needs for a cluster started with ``ray start``).

``ClusterStart`` starts the embedded cluster on a background thread, so stages can run meanwhile.

A job's wait has no fixed sleep: its status is polled at an interval that starts at 20 ms and grows
to ``poll_s``, so a short stage is seen to end within milliseconds and a long one costs few requests.
``submit`` and ``wait`` are ``run_job``'s two halves, for a caller that submits the next job early
(the pipeline does: see ``launch/pipeline/dag.py``).
"""

from __future__ import annotations

import os
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from medsage.runtime import stage_python

DEFAULT_LOCAL_DASHBOARD = "http://127.0.0.1:8265"
CLIENT_INIT_ATTEMPTS = 3  # connections to a ray:// address whose per-connection server failed to start (jobs_client)
DEFAULT_TOKEN_FILE = Path("~/.ray/auth_token")  # where Ray keeps the token of a cluster it starts with token auth


class ClusterError(RuntimeError):
    """The configured Ray cluster cannot be reached; the message names the address and what to check."""


@dataclass
class JobResult:
    submission_id: str
    status: str  # SUCCEEDED | FAILED | STOPPED
    exit_code: int | None
    message: str
    log_path: Path
    node: str | None = None  # the Ray node id the job's command ran on (None: a local run)

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


# Ray's job supervisor sets this (the job's runtime_env, as JSON) for every job's entrypoint, with RAY_ADDRESS.
JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def in_ray_job() -> bool:
    """Whether this process is (a child of) a Ray job's entrypoint: its ``RAY_ADDRESS`` is then the job's cluster."""
    return JOB_CONFIG_ENV in os.environ


def configured_address(address: str | None = None) -> str | None:
    """The running cluster a command is pointed at: ``address`` (``cluster.ray_address``), else ``RAY_ADDRESS``."""
    return address or os.environ.get("RAY_ADDRESS") or None


def existing_cluster(address: str | None = None) -> str | None:
    """The address of the cluster to use: ``configured_address``, or the dashboard of one running on 127.0.0.1;
    None when an embedded cluster must be started."""
    address = configured_address(address)
    if not address and _reachable(DEFAULT_LOCAL_DASHBOARD):
        address = DEFAULT_LOCAL_DASHBOARD
    return address


def jobs_client(address: str) -> "JobSubmissionClient":  # noqa: F821
    """A Jobs API client for ``address`` (``ray://``, ``http(s)://`` or ``host:port``), exactly that one.

    Ray's client lets ``RAY_ADDRESS`` (and ``RAY_API_SERVER_ADDRESS``) in the environment override the address it
    is given; here the address medsage was told wins, so it is hidden from the environment while the client starts.
    """
    from ray.job_submission import JobSubmissionClient

    hidden = {k: os.environ.pop(k) for k in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS") if k in os.environ}
    try:
        for attempt in range(1, CLIENT_INIT_ATTEMPTS + 1):
            try:
                return JobSubmissionClient(address)
            except ConnectionAbortedError as err:
                # A ray:// address reaches the head's Ray Client proxy, which starts one server process per
                # connection and gives it 30 s to answer; on a busy head that start can miss the deadline and the
                # proxy answers "Initialization failure from server". The cluster is up: a new connection gets
                # a new server. Anything else (refused, unknown host, wrong port) fails at once.
                if attempt == CLIENT_INIT_ATTEMPTS:
                    raise
                print(f"medsage: the Ray Client server at {address} did not start for this connection "
                      f"({str(err).splitlines()[0]}); connecting again ({attempt + 1}/{CLIENT_INIT_ATTEMPTS})",
                      file=sys.stderr, flush=True)
                time.sleep(2.0 * attempt)
    except Exception as err:  # noqa: BLE001 - Ray raises ConnectionError, ValueError, RuntimeError, grpc errors
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ClusterError(f"cannot reach the Ray cluster at {address}: {reason}. Check that it is running (`ray "
                           "status` on its head node) and that this machine reaches the port: ray://head:10001 "
                           "(Ray Client), http://head:8265 (dashboard) or head:6379 (GCS)") from None
    finally:
        os.environ.update(hidden)


@contextmanager
def ray_cluster(address: str | None = None, *, num_cpus: int | None = None, num_gpus: int | None = None,
                temp_dir: str | Path | None = None) -> Iterator["JobSubmissionClient"]:  # noqa: F821
    """A Jobs API client for ``address``, an already running local cluster, or an embedded one."""
    address = existing_cluster(address)
    if address:
        yield jobs_client(address)
        return

    _loopback_only()
    import shutil
    import tempfile

    import ray
    from ray.job_submission import JobSubmissionClient

    # Ray makes the temp folder it is given world-writable (0777): it goes inside a folder of mode 0700
    private = None if temp_dir else Path(tempfile.mkdtemp(prefix="medsage-ray-"))
    token = DEFAULT_TOKEN_FILE.expanduser()
    had_token = token.exists() or bool(os.environ.get("RAY_AUTH_TOKEN_PATH") or os.environ.get("RAY_AUTH_TOKEN"))
    try:
        with _lean():
            try:
                ctx = ray.init(
                    _node_ip_address="127.0.0.1", include_dashboard=True, dashboard_host="127.0.0.1",
                    dashboard_port=None, num_cpus=num_cpus, num_gpus=num_gpus,
                    _temp_dir=str(temp_dir or private / "ray"), configure_logging=False, log_to_driver=False,
                    namespace="medsage",
                )
            except BaseException:
                ray.shutdown()  # what a refused start left running (its GCS, when Ray refused the raylet's resources)
                raise
        if not had_token and token.exists():  # Ray just wrote it with the umask's mode (0644): this user's alone
            token.chmod(0o600)
        client = JobSubmissionClient(f"http://{ctx.dashboard_url}")
        try:
            yield client
        finally:
            ray.shutdown()
    finally:
        if private:
            shutil.rmtree(private, ignore_errors=True)


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
        asked = [f"{k}={v}" for k, v in kwargs.items() if v is not None and k != "temp_dir"]
        self._asked = ", ".join(asked) or "Ray's defaults"
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
        if isinstance(self._error, Exception) and not isinstance(self._error, ClusterError):
            # Ray's own failure (an AssertionError or RuntimeError from ray.init) would reach the user as a
            # traceback from a background thread: one line naming what was asked of it instead
            reason = str(self._error).strip().splitlines()[0] if str(self._error).strip() else ""
            raise ClusterError(f"the embedded Ray cluster did not start ({self._asked}): {type(self._error).__name__}"
                               f"{': ' + reason if reason else ''}") from self._error
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


def entrypoint_resources(resources: dict[str, float] | None) -> dict:
    """``{GPU: 8, CPU: 2, memory: 1e9, node2: 1}`` as ``submit_job``'s entrypoint arguments; zero amounts left out.

    The job's command holds them while it runs, so Ray starts it on a node that has them free (without any,
    a job's command runs on the head node).
    """
    resources = {k: v for k, v in (resources or {}).items() if v}
    out = {f"entrypoint_{arg}": resources.pop(key) for key, arg in
           (("CPU", "num_cpus"), ("GPU", "num_gpus"), ("memory", "memory")) if key in resources}
    if "entrypoint_memory" in out:
        out["entrypoint_memory"] = int(out["entrypoint_memory"])
    if resources:
        out["entrypoint_resources"] = resources
    return out


def submit(client, entrypoint: str, *, runtime_env: dict | None = None, submission_id: str | None = None,
           resources: dict[str, float] | None = None, patience_s: float = 180.0) -> str:
    """Submit ``entrypoint`` (a shell command) as a job holding ``resources`` (``entrypoint_resources``); its
    submission id.

    Just after a cluster's start its dashboard may not know the node's agent yet and answers "No
    available agent to submit job, please try again later": that answer is retried for ``patience_s`` (a loaded
    2-core machine starting a second cluster took over 60 s).
    """
    deadline = time.monotonic() + patience_s
    while True:
        try:
            return client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env or {}, submission_id=submission_id,
                                     **entrypoint_resources(resources))
        except RuntimeError as err:
            if "No available agent" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def wait(client, sid: str, log_path: str | Path | None, *, poll_s: float = 0.2, echo: bool = False) -> JobResult:
    """Wait for job ``sid`` to end (no fixed sleep: see module docstring); save its whole log to ``log_path``
    (None: only echoed)."""
    from medsage.io import atomic_write_text

    if log_path is not None:
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
    if log_path is not None:
        atomic_write_text(log_path, client.get_job_logs(sid))
    info = client.get_job_info(sid)
    return JobResult(sid, str(status.value if hasattr(status, "value") else status),
                     getattr(info, "driver_exit_code", None), info.message or "", log_path,
                     getattr(info, "driver_node_id", None))


def run_job(client, entrypoint: str, log_path: str | Path | None, *, runtime_env: dict | None = None,
            submission_id: str | None = None, resources: dict[str, float] | None = None, poll_s: float = 0.2,
            echo: bool = False) -> JobResult:
    """Submit ``entrypoint`` (a shell command), wait for it, save its whole log to ``log_path``."""
    sid = submit(client, entrypoint, runtime_env=runtime_env, submission_id=submission_id, resources=resources)
    return wait(client, sid, log_path, poll_s=poll_s, echo=echo)


def runtime_env_for(env: str | None, env_vars: dict[str, str] | None = None) -> dict:
    """Ray runtime_env for a stage environment: a virtualenv folder or ``uv:pkg1,pkg2``; None: this interpreter.

    The entrypoint itself is run with the environment's python (``medsage.runtime.stage_python``); ``py_executable``
    makes the job's Ray workers (verl's actors, the SFT's per-node launch) use it too, on whichever node they
    land: the same path on every node (``launch/pipeline/cluster_check.py`` checks it), never the cluster's own.
    """
    out: dict = {"env_vars": dict(env_vars or {})}
    if env is not None and env.startswith("uv:"):
        out["uv"] = [p for p in env[3:].split(",") if p]
        return out
    out["py_executable"] = stage_python(env)
    return out
