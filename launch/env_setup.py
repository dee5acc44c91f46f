"""``medsage env setup``: build each GPU stage's Python environment from its lock, and name it in a cluster recipe.

    medsage env setup [--stage sft|rl|eval ...] [--prefix DIR] [--cluster NAME]
    medsage env setup --prefix /opt/envs --cluster a100_4x

For each stage, with uv: ``uv venv --python 3.11 <prefix>/<stage>``, ``uv pip sync locks/<stage>.txt`` (exactly
the locked versions, nothing else), then medsage itself from this checkout, editable and ``--no-deps`` (the lock
holds its dependencies; code edits reach every stage). uv hardlinks files from its cache, so environments that
share torch share its disk, and a rerun only installs what changed. ``--cluster NAME`` writes the paths into
recipes/cluster/NAME.yaml's ``envs:`` block (its comments and every other line kept).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from medsage.launch import env_locks
from medsage.launch.env_locks import EnvLockError

DEFAULT_PREFIX = "envs"


class EnvSetupError(RuntimeError):
    """Bad input (stage, folder, cluster, a missing lock or uv); the message names which and why."""


class BuildFailed(EnvSetupError):
    """A uv step failed (uv printed why); the message names the stage and the command."""


@dataclass
class BuiltEnv:
    stage: str
    path: Path
    lock: Path
    packages: int
    seconds: float


# --------------------------------------------------------------------------------------------
# building one environment
# --------------------------------------------------------------------------------------------
def _run(cmd: list[str], stage: str, say) -> None:
    say("  $ " + " ".join(cmd))
    rc = subprocess.run(cmd, check=False).returncode
    if rc != 0:
        raise BuildFailed(f"stage {stage}: `{' '.join(cmd)}` failed (exit {rc}); uv's message is above")


def _check_folder(path: Path) -> None:
    """A new folder, or a virtual environment made before (rebuilt in place): never someone's other folder."""
    if path.exists() and not (path / "pyvenv.cfg").is_file() and any(path.iterdir()):
        raise EnvSetupError(f"{path} exists and is not a virtual environment (no pyvenv.cfg): "
                            "choose another --prefix or empty it")


def build_env(stage: str, path: Path, lock: Path, root: Path, uv: str, say=print) -> BuiltEnv:
    """``path`` holding exactly ``lock`` plus medsage (editable, from ``root``)."""
    start = time.perf_counter()
    python = path / "bin" / "python"
    say(f"[{stage}] {path} from {lock.relative_to(root)}")
    _run([uv, "venv", "--quiet", "--allow-existing", "--python", env_locks.PYTHON_VERSION, str(path)], stage, say)
    found = subprocess.run([str(python), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                           capture_output=True, text=True, check=False).stdout.strip()
    if found != env_locks.PYTHON_VERSION:
        raise EnvSetupError(f"{path} runs Python {found or '?'}, and {lock.name} is resolved for "
                            f"{env_locks.PYTHON_VERSION}: remove the folder and run again")
    _run([uv, "pip", "sync", "--python", str(python), str(lock)], stage, say)
    _run([uv, "pip", "install", "--quiet", "--python", str(python), "--no-deps", "-e", str(root)], stage, say)
    return BuiltEnv(stage, path, lock, len(env_locks.read_pins(lock)), time.perf_counter() - start)


# --------------------------------------------------------------------------------------------
# the cluster recipe's envs: block
# --------------------------------------------------------------------------------------------
def cluster_recipe(name: str) -> Path:
    from medsage.recipes import recipes_dir

    folder = recipes_dir() / "cluster"
    path = folder / f"{name}.yaml"
    if not path.is_file():
        have = ", ".join(sorted(p.stem for p in folder.glob("*.yaml")))
        raise EnvSetupError(f"--cluster {name}: no recipe {path} (have: {have})")
    return path


_PLAIN = re.compile(r"[\w./~+@:-]+")


def _yaml_scalar(value: str) -> str:
    return value if _PLAIN.fullmatch(value) and not value.startswith(("~", "@", ":")) else '"' + \
        value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def set_cluster_envs(text: str, envs: dict[str, str], where: str = "the cluster recipe") -> str:
    """``text`` (a cluster recipe) with ``envs:`` entries set to ``envs``: each value replaced in place, its comment
    kept in its column where the value fits; a stage the block lacks is added at its end; nothing else changes."""
    import yaml

    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if re.match(r"envs:\s*(#.*)?$", line)), None)
    if start is None:
        if re.search(r"^envs\s*:", text, flags=re.M):  # a flow-style or otherwise unusual `envs:` of its own
            raise EnvSetupError(f"{where}: its `envs:` is not a block mapping this edit can write into; set by hand: "
                                f"{envs}")
        # a recipe derived through Hydra defaults (a100_8x from a100_1x): its own envs block overrides the base's
        lines = [*lines, *([] if not lines or lines[-1].endswith("\n") else ["\n"]),
                 "envs:                         # Python environment per stage (medsage env setup)\n"]
        start = len(lines) - 1
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or lines[end][0] in " \t" or lines[end].lstrip().startswith("#")):
        end += 1
    while end > start + 1 and not lines[end - 1].strip():  # trailing blank lines belong to what follows
        end -= 1
    indent = "  "
    for stage, value in envs.items():
        item = re.compile(rf"^(\s+){re.escape(stage)}:(\s*)(.*?)(\s+#.*)?(\r?\n)?$")
        hit = next((i for i in range(start + 1, end) if item.match(lines[i])), None)
        scalar = _yaml_scalar(value)
        if hit is None:
            lines.insert(end, f"{indent}{stage}: {scalar}\n")
            end += 1
            continue
        m = item.match(lines[hit])
        indent, comment, newline = m.group(1), m.group(4) or "", m.group(5) or ""
        head = f"{indent}{stage}:{m.group(2) or ' '}{scalar}"
        if comment:  # keep the comment's column when the new value leaves room
            column = len(lines[hit]) - len(newline) - len(comment.lstrip())  # where its '#' stood
            head = head.ljust(column) if len(head) < column else head + " "
            comment = comment.lstrip()
        lines[hit] = head + comment + newline
    out = "".join(lines)
    before, after = yaml.safe_load(text), yaml.safe_load(out)
    expected = {**before, "envs": {**(before.get("envs") or {}), **envs}}
    if after != expected:  # the edit above is textual: prove it changed what it meant to and nothing else
        raise EnvSetupError(f"{where}: could not set envs in place (the `envs:` block has a layout this edit "
                            f"does not handle); set them by hand: {envs}")
    return out


def write_cluster_envs(path: Path, envs: dict[str, str]) -> None:
    from medsage.io import atomic_write_text

    atomic_write_text(path, set_cluster_envs(path.read_text(), envs, str(path)))


# --------------------------------------------------------------------------------------------
# the command
# --------------------------------------------------------------------------------------------
def setup(stages: list[str], prefix: Path, cluster: str | None, say=print) -> list[BuiltEnv]:
    """Check every input first (stages, locks, cluster, folders, uv), then build each stage and write the recipe."""
    unknown = [s for s in stages if s not in env_locks.STAGE_EXTRAS]
    if unknown:
        raise EnvSetupError(f"unknown stage {unknown[0]!r}: environments are built for "
                            f"{', '.join(env_locks.STAGE_EXTRAS)} (the data stage runs in the driver's environment)")
    root = env_locks.checkout_root()
    locks = {s: env_locks.lock_path(s, root) for s in stages}
    for stage, lock in locks.items():
        if not lock.is_file():
            raise EnvSetupError(f"no lock for stage {stage}: {lock} is missing; generate it with "
                                f"`{env_locks.REGENERATE} --stage {stage}`")
    recipe = cluster_recipe(cluster) if cluster else None
    paths = {s: (prefix / s).resolve() for s in stages}
    for path in paths.values():
        _check_folder(path)
    uv = env_locks.find_uv()
    say(f"medsage env setup: {', '.join(stages)} under {prefix.resolve()} with uv {env_locks.uv_version(uv)}")
    built = [build_env(s, paths[s], locks[s], root, uv, say) for s in stages]
    say("built:")
    for b in built:
        say(f"  {b.stage:<5} {b.path}  ({b.lock.relative_to(root)}: {b.packages} packages + medsage, {b.seconds:.0f} s)")
    envs = {b.stage: str(b.path) for b in built}
    if recipe is not None:
        write_cluster_envs(recipe, envs)
        say(f"wrote {recipe}: " + ", ".join(f"envs.{s}" for s in envs))
        say(f"next: medsage env check cluster={cluster}")
    else:
        say("next: medsage env check " + " ".join(f"cluster.envs.{s}={p}" for s, p in envs.items()))
        say("      (or rerun with --cluster NAME to write them into recipes/cluster/NAME.yaml)")
    return built


def main(argv: list[str] | None = None) -> int:
    from medsage.launch.cli import Formatter

    parser = argparse.ArgumentParser(prog="medsage env setup", formatter_class=Formatter, description=__doc__)
    parser.add_argument("--stage", action="append",
                        help=f"build only this stage (repeatable; default: {', '.join(env_locks.STAGE_EXTRAS)})")
    parser.add_argument("--prefix", default=DEFAULT_PREFIX, type=Path,
                        help=f"folder for the environments, one subfolder per stage (default: ./{DEFAULT_PREFIX})")
    parser.add_argument("--cluster", metavar="NAME", help="write the paths into recipes/cluster/NAME.yaml's envs:")
    args = parser.parse_args(argv)
    try:
        setup(args.stage or list(env_locks.STAGE_EXTRAS), args.prefix, args.cluster)
    except (EnvSetupError, EnvLockError) as err:
        print(f"medsage env setup: error: {err}", file=sys.stderr)
        return 1 if isinstance(err, BuildFailed) else 2
    return 0
