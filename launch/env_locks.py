"""The locks of a GPU node's stage environments: ``locks/<stage>.txt``, resolved by uv from pyproject's extras.

    python -m medsage.launch.env_locks [--stage sft|rl|eval ...] [--upgrade]

Why locks: LLaMA-Factory 0.9.5, verl 0.9.1 and vLLM pin conflicting torch/transformers versions, so each
stage runs in an environment of its own, and an unpinned install resolves to different versions every
week. Each stage's extra (``gpu-sft``, ``gpu-rl``, ``gpu-eval``) is resolved on its own for Linux x86_64
with CUDA (``uv pip compile --python-platform x86_64-manylinux_2_35 --python-version 3.11``); rerunning
keeps the pins it can (uv prefers the versions already in the lock; ``--upgrade`` takes the newest).
``medsage env setup`` builds the environments from these files.

Each lock's header carries a digest of its inputs: the extra's requirements as pyproject declares them
(core dependencies and ``medsage[...]`` references expanded) and the target platform. ``drift()`` says
where pyproject and a lock disagree; a fast test runs it on every lock.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

# stage -> the pyproject extra its environment installs. The data stage runs in the driver's environment.
STAGE_EXTRAS: dict[str, str] = {"sft": "gpu-sft", "rl": "gpu-rl", "eval": "gpu-eval"}
PYTHON_VERSION = "3.11"
PYTHON_PLATFORM = "x86_64-manylinux_2_35"  # glibc 2.35 (Ubuntu 22.04): the oldest a current GPU node runs
# The target for evaluating requirement markers (PEP 508) as the locks are resolved.
TARGET_MARKERS = {"python_version": PYTHON_VERSION, "python_full_version": f"{PYTHON_VERSION}.0",
                  "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
                  "os_name": "posix", "implementation_name": "cpython", "platform_python_implementation": "CPython"}
# Never in a lock: PyPI has only its source (a CUDA build of an hour); attention falls back to sdpa without it.
FORBIDDEN = {"flash-attn": "PyPI has only its source; install a prebuilt wheel for your CUDA/torch by hand if you want it"}
REGENERATE = "python -m medsage.launch.env_locks"
DIGEST_LINE = "# inputs-sha256: "


class EnvLockError(RuntimeError):
    """A lock or its inputs cannot be used; the message names the file and what to run."""


def checkout_root() -> Path:
    """The source checkout medsage runs from: the folder holding pyproject.toml and locks/."""
    root = Path(__file__).resolve().parents[1]
    if not (root / "pyproject.toml").is_file():
        raise EnvLockError(f"medsage runs from {root}, which is not a source checkout (no pyproject.toml): the locks "
                           "and `medsage env setup` need one (git clone the repository and install it with -e)")
    return root


def lock_path(stage: str, root: Path | None = None) -> Path:
    return (root or checkout_root()) / "locks" / f"{stage}.txt"


def find_uv() -> str:
    """uv beside this interpreter (a core dependency), else the ``uv`` package's binary, else uv on PATH."""
    here = Path(sys.executable).with_name("uv")
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        pass
    found = shutil.which("uv")
    if found:
        return found
    raise EnvLockError(f"uv is not installed for {sys.executable} nor on PATH: `pip install uv` "
                       "(or see https://docs.astral.sh/uv/getting-started/installation/)")


def uv_version(uv: str) -> str:
    return subprocess.run([uv, "--version"], capture_output=True, text=True, check=True).stdout.split()[1]


# --------------------------------------------------------------------------------------------
# inputs: pyproject's requirements for an extra
# --------------------------------------------------------------------------------------------
def read_pyproject(path: Path) -> dict:
    import tomllib  # Python >= 3.11: the locks are made and checked on the development Python

    try:
        return tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise EnvLockError(f"{path}: {err}") from None


def extra_requirements(pyproject: dict, extra: str) -> list[str]:
    """What installing ``.[extra]`` asks for: the core dependencies and the extra, with ``<project>[...]``
    references expanded (recursively), sorted and without duplicates."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = pyproject["project"]
    name = canonicalize_name(project["name"])
    extras = {canonicalize_name(k): v for k, v in project.get("optional-dependencies", {}).items()}
    out: set[str] = set(project.get("dependencies", []))
    seen: set[str] = set()

    def expand(x: str) -> None:
        key = canonicalize_name(x)
        if key in seen:
            return
        if key not in extras:
            raise EnvLockError(f"pyproject.toml has no extra {x!r} (has: {', '.join(sorted(extras))})")
        seen.add(key)
        for line in extras[key]:
            req = Requirement(line)
            if canonicalize_name(req.name) == name:
                for inner in req.extras:
                    expand(inner)
            else:
                out.add(line)

    expand(extra)
    return sorted(out, key=lambda s: (canonicalize_name(Requirement(s).name), s))


def inputs_digest(pyproject: dict, extra: str) -> str:
    """sha256 of what resolves a lock: the extra's requirements and the target platform and Python."""
    payload = {"extra": extra, "requirements": extra_requirements(pyproject, extra),
               "python_version": PYTHON_VERSION, "python_platform": PYTHON_PLATFORM}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


# --------------------------------------------------------------------------------------------
# a lock: its pins and its header
# --------------------------------------------------------------------------------------------
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)")


def read_pins(path: Path) -> dict[str, str]:
    """``{canonical name: version}`` of every ``name==version`` line of a lock."""
    from packaging.utils import canonicalize_name

    pins = {}
    for line in path.read_text().splitlines():
        m = _PIN.match(line)
        if m:
            pins[canonicalize_name(m.group(1))] = m.group(2)
    return pins


def read_digest(path: Path) -> str | None:
    for line in path.read_text().splitlines():
        if line.startswith(DIGEST_LINE):
            return line[len(DIGEST_LINE):].strip()
        if line and not line.startswith("#"):
            return None  # past the header
    return None


def drift(stage: str, pyproject_path: Path | None = None, lock: Path | None = None) -> list[str]:
    """Where ``lock`` no longer matches pyproject's extra for ``stage``: a requirement the pinned version does
    not satisfy or that the lock lacks, a forbidden package, or a digest of other inputs. Empty: in step."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    root = checkout_root() if pyproject_path is None or lock is None else None
    pyproject_path = pyproject_path or root / "pyproject.toml"
    lock = lock or lock_path(stage, root)
    extra = STAGE_EXTRAS[stage]
    fix = f"regenerate it: {REGENERATE} --stage {stage}"
    if not lock.is_file():
        return [f"{lock} is missing; {fix}"]
    pyproject = read_pyproject(pyproject_path)
    pins = read_pins(lock)
    problems = []
    for line in extra_requirements(pyproject, extra):
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate({**TARGET_MARKERS, "extra": ""}):
            continue  # not for Linux x86_64 / Python 3.11
        name = canonicalize_name(req.name)
        pinned = pins.get(name)
        if pinned is None:
            problems.append(f"{lock.name} has no {req.name}, which pyproject's [{extra}] extra requires ({line!r}); {fix}")
        elif not req.specifier.contains(pinned, prereleases=True):
            problems.append(f"{lock.name} pins {req.name}=={pinned}, which does not satisfy {line!r} of pyproject's "
                            f"[{extra}] extra; {fix}")
    for name, why in FORBIDDEN.items():
        if name in pins:
            problems.append(f"{lock.name} holds {name}=={pins[name]}, which no lock may hold ({why}); {fix}")
    expected, found = inputs_digest(pyproject, extra), read_digest(lock)
    if found != expected:
        problems.append(f"{lock.name} was resolved from other inputs than pyproject's [{extra}] extra now declares "
                        f"(header {DIGEST_LINE.strip('# ')}{found or 'missing'}, pyproject {expected[:12]}...); {fix}")
    return problems


# --------------------------------------------------------------------------------------------
# making a lock
# --------------------------------------------------------------------------------------------
def compile_command(uv: str, extra: str, output: Path, upgrade: bool = False) -> list[str]:
    return [uv, "pip", "compile", "pyproject.toml", "--extra", extra, "--python-platform", PYTHON_PLATFORM,
            "--python-version", PYTHON_VERSION, "--no-header", "--annotation-style", "line", "--quiet",
            "-o", str(output), *(["--upgrade"] if upgrade else [])]


def header(stage: str, extra: str, uv_ver: str, digest: str) -> str:
    return "\n".join([
        f"# The `{stage}` stage environment of a GPU node: pyproject.toml's [{extra}] extra, resolved by uv {uv_ver}",
        f"# for Linux x86_64 (manylinux_2_35, CUDA wheels) and Python {PYTHON_VERSION}. Do not edit by hand.",
        f"#   build it:    medsage env setup --stage {stage} --prefix /opt/envs",
        f"#   regenerate:  {REGENERATE} --stage {stage}   (after changing pyproject.toml; --upgrade for newer pins)",
        (f"#   uv command:  uv pip compile pyproject.toml --extra {extra} --python-platform {PYTHON_PLATFORM} "
         f"--python-version {PYTHON_VERSION}"),
        f"{DIGEST_LINE}{digest}",
    ]) + "\n"


def write_lock(stage: str, uv: str, root: Path, upgrade: bool = False) -> Path:
    """Resolve ``stage``'s extra into locks/<stage>.txt (uv keeps the pins already there unless ``upgrade``)."""
    extra = STAGE_EXTRAS[stage]
    lock = lock_path(stage, root)
    lock.parent.mkdir(exist_ok=True)
    proc = subprocess.run(compile_command(uv, extra, lock, upgrade), cwd=root, capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise EnvLockError(f"uv could not resolve pyproject's [{extra}] extra for {stage}:\n{proc.stderr.strip()}")
    body = lock.read_text()
    from medsage.io import atomic_write_text

    atomic_write_text(lock, header(stage, extra, uv_version(uv), inputs_digest(read_pyproject(root / "pyproject.toml"),
                                                                              extra)) + body)
    problems = drift(stage, root / "pyproject.toml", lock)
    if problems:
        raise EnvLockError("\n".join(problems))
    return lock


def key_versions(lock: Path) -> str:
    pins = read_pins(lock)
    names = ["torch", "transformers", "vllm", "verl", "deepspeed", "llamafactory", "accelerate"]
    return ", ".join(f"{n} {pins[n]}" for n in names if n in pins)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"{REGENERATE}", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", action="append", help=f"lock only this stage (repeatable; default: {', '.join(STAGE_EXTRAS)})")
    parser.add_argument("--upgrade", action="store_true", help="take the newest versions pyproject allows, not the locked ones")
    args = parser.parse_args(argv)
    try:
        stages = args.stage or list(STAGE_EXTRAS)
        unknown = [s for s in stages if s not in STAGE_EXTRAS]
        if unknown:
            raise EnvLockError(f"unknown stage {unknown[0]!r}: the GPU stages are {', '.join(STAGE_EXTRAS)}")
        root, uv = checkout_root(), find_uv()
        for stage in stages:
            lock = write_lock(stage, uv, root, args.upgrade)
            print(f"{lock.relative_to(root)}: {len(read_pins(lock))} packages ({key_versions(lock)})")
    except EnvLockError as err:
        print(f"{REGENERATE}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
