"""How medsage runs processes: each stage's interpreter, logged subprocesses, dying with the parent,
package-version probes of another environment, and the one cache folder.

Why one module: the stages run in their own environments (LLaMA-Factory, verl and vLLM pin conflicting
torch/transformers versions, docs/design.md), so every stage needs the same few answers, "which python",
"which versions does it have", "what happens to the trainer if we are killed", and two answers to
one question end up disagreeing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

CACHE_ENV = "MEDSAGE_CACHE"
EXIT_WITH_PARENT_ENV = "MEDSAGE_EXIT_WITH_PARENT"


def cache_root() -> Path:
    """The folder for medsage's caches (benchmark images, LLaMA-Factory schemas): ``$MEDSAGE_CACHE``,
    else ``$XDG_CACHE_HOME/medsage``, else ``~/.cache/medsage``."""
    root = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "medsage")
    return Path(root)


def stage_python(env: str | None) -> str:
    """The interpreter of a stage environment (``cluster.envs.<stage>``): a virtualenv folder's python,
    or this interpreter for None and for ``uv:...`` environments (Ray builds those itself)."""
    if not env or env.startswith("uv:"):
        return sys.executable
    python = Path(env).expanduser() / "bin" / "python"
    if not python.exists():
        raise FileNotFoundError(f"stage environment {env!r} has no {python}; create it, then run `medsage env check`")
    return str(python)


# One script for this interpreter and any other: importlib.metadata only, so probing an environment
# imports nothing heavy, and it needs no medsage installed there.
_PROBE = """
import json, sys
from importlib.metadata import version, PackageNotFoundError
out = {"python": sys.executable, "python_version": sys.version.split()[0], "packages": {}}
for name in sys.argv[1:]:
    try:
        out["packages"][name] = version(name)
    except PackageNotFoundError:
        out["packages"][name] = None
print(json.dumps(out))
"""


def package_versions(python: str | None, names: Sequence[str], timeout: float = 120) -> dict:
    """``{"python", "python_version", "packages": {name: version or None}}`` of ``python``'s environment.

    Run with cwd="/" so a checkout's own metadata (medsage.egg-info) cannot stand in for an install.
    Raises ``RuntimeError`` naming the interpreter when it cannot run.
    """
    python = python or sys.executable
    proc = subprocess.run([python, "-c", _PROBE, *names], capture_output=True, text=True, timeout=timeout, cwd="/")
    if proc.returncode != 0:
        raise RuntimeError(f"could not run {python}: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def die_with_parent() -> None:
    """``preexec_fn`` for a child (a trainer): Linux sends it SIGTERM when medsage itself dies, so no
    orphan keeps writing the run. Elsewhere a no-op."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def exit_with_parent(poll_s: float = 1.0) -> None:
    """For this process (a pipeline stage, ``$MEDSAGE_EXIT_WITH_PARENT=1``): when the parent is gone, end
    our process group (the stage and its trainer) so a rerun finds the folder free.

    Why not ``die_with_parent``: PDEATHSIG is set in the child between fork and exec by whoever starts
    it, and a stage is started by Ray's job supervisor, not by medsage, in a session of its own.
    """
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        try:
            if os.getpgrp() == os.getpid():  # we lead our group: take our children with us
                os.killpg(os.getpgrp(), signal.SIGTERM)
        finally:
            os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def run_logged(cmd: Sequence[str], log_path: Path, *, env: Mapping[str, str] | None = None, echo: bool = True,
               header: str | None = None) -> int:
    """Run ``cmd``; every byte of its stdout and stderr is appended to ``log_path`` (and to our stdout if
    ``echo``). The child dies with us; Ctrl-C or an error here terminates it. Returns its exit code."""
    with Path(log_path).open("ab") as log:  # appended: a resumed run keeps the earlier attempts' log
        if header:
            log.write(f"\n===== {header}\n".encode())
            log.flush()
        proc = subprocess.Popen(list(cmd), env=dict(env) if env is not None else None, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
        try:
            while chunk := os.read(proc.stdout.fileno(), 65536):
                log.write(chunk)
                log.flush()
                if echo:
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.flush()
            return proc.wait()
        except BaseException:
            proc.terminate()  # do not leave a trainer running without us
            proc.wait()
            raise
