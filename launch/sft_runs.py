"""The run folders of ``medsage sft``: which run to start or resume, its manifest, and the checks that
refuse to mix two runs in one folder (layout names in launch/layout.py)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from medsage.launch import layout

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


class SftError(RuntimeError):
    """A user-facing failure of the SFT stage (bad recipe, data, arguments, or a failed training)."""


def pick_run(root: Path, fresh: bool) -> tuple[Path, dict | None]:
    """(run folder, its manifest if it is being resumed or is finished, else None)."""
    runs = sorted((int(m.group(1)), p) for p in (root.iterdir() if root.is_dir() else [])
                  if (m := layout.SFT_RUN.match(p.name)) and p.is_dir())
    if runs and not fresh:
        latest = runs[-1][1]
        manifest = read_json(latest / layout.SFT_MANIFEST)
        if manifest is not None:
            if manifest.get("status") == "running" and alive(manifest.get("attempts", [{}])[-1]):
                pid = manifest["attempts"][-1].get("pid")
                raise SftError(f"{latest} is being trained right now (pid {pid} on this host); "
                               "wait for it, or use --fresh for a separate run")
            return latest, manifest
        # A run folder without a manifest was never started by medsage: leave it alone.
    number = runs[-1][0] + 1 if runs else 1
    return layout.sft_run_dir(root, number), None


def alive(attempt: dict) -> bool:
    if attempt.get("host") != socket.gethostname() or not attempt.get("pid"):
        return False
    try:
        os.kill(int(attempt["pid"]), 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def last_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint: Trainer writes trainer_state.json last, after weights and optimizer."""
    done = [(int(m.group(1)), p) for p in (run_dir.iterdir() if run_dir.is_dir() else [])
            if (m := CHECKPOINT.match(p.name)) and (p / "trainer_state.json").is_file()]
    return max(done)[1] if done else None


def check_same_run(previous: dict, args: dict, data_hash: dict, run_dir: Path) -> None:
    """Resuming with other settings or other data would silently mix two runs: refuse instead."""
    before = {k: v for k, v in previous.get("llamafactory_args", {}).items() if k != "resume_from_checkpoint"}
    now = {k: v for k, v in args.items() if k != "resume_from_checkpoint"}
    changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
    problems = [f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in changed]
    if previous.get("data_hash", {}).get("sha256") != data_hash["sha256"]:
        problems.append("the training data changed (data hash differs)")
    if problems:
        raise SftError(f"cannot resume {run_dir}: this command differs from the one that started it:\n  - "
                       + "\n  - ".join(problems) + "\nrerun the original command, or use --fresh for a new run")


def check_resumed_weights(run_dir: Path, resume_from: Path) -> dict:
    """The trainer's record that, after resuming, its weights equal ``resume_from``'s (written by the callback of
    plugins/engines/llamafactory_train.py). Without it the run may have trained on from reset weights."""
    record = read_json(run_dir / layout.SFT_RESUME_CHECK)
    if record is None or record.get("checkpoint") != str(resume_from):
        raise SftError(f"{run_dir} resumed from {resume_from.name}, but the trainer did not confirm that it loaded "
                       f"that checkpoint's weights (no {layout.SFT_RESUME_CHECK} naming it): it may have trained on "
                       "from reset weights, so the run is not marked finished; start a new run with --fresh")
    return record


def start_manifest(previous, recipe, args, data_hash, stage_python, launch, batch, resume_from) -> dict:
    from medsage.plugins.engines import llamafactory as lf

    manifest = dict(previous or {})
    manifest.update(
        medsage_stage="sft",
        status="running",
        started_at=manifest.get("started_at") or now(),
        ended_at=None,
        recipe=recipe,
        llamafactory_args=args,
        llamafactory_yaml=layout.SFT_LF_CONFIG,
        effective_batch=batch,
        data_hash=data_hash,
        versions=lf.engine_versions(stage_python),
        git=git_revision(),
    )
    attempt = {"started_at": now(), "pid": os.getpid(), "host": socket.gethostname(),
               "command": launch.cmd, "env": launch.env, "mode": launch.mode,
               "resumed_from": str(resume_from) if resume_from else None}
    manifest["attempts"] = [*manifest.get("attempts", []), attempt]
    return manifest


def write_run_files(run_dir: Path, args: dict, manifest: dict) -> None:
    import yaml

    from medsage.io import atomic_write_text

    header = (f"# Generated by `medsage sft` from {manifest['recipe']['sft']['name']} "
              f"({manifest['recipe']['model']['name']}, {manifest['recipe']['cluster']['name']}); "
              f"run it alone with: llamafactory-cli train {run_dir / layout.SFT_LF_CONFIG}\n"
              "# (medsage runs it through plugins/engines/llamafactory_train.py, which checks resumed weights)\n")
    atomic_write_text(run_dir / layout.SFT_LF_CONFIG, header + yaml.safe_dump(args, sort_keys=False))
    save_manifest(run_dir, manifest)


def save_manifest(run_dir: Path, manifest: dict) -> None:
    """The manifest beside the model and inside every checkpoint (each says which run made it)."""
    from medsage.io import atomic_write_json

    atomic_write_json(run_dir / layout.SFT_MANIFEST, manifest)
    for checkpoint in run_dir.glob("checkpoint-*"):
        if (checkpoint / "trainer_state.json").is_file():
            atomic_write_json(checkpoint / layout.SFT_MANIFEST, manifest)


def git_revision() -> dict:
    """The medsage checkout's commit and whether it had local edits; absent outside a git checkout."""
    source = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return {"revision": None, "note": f"{source} is not a git checkout (installed package?)"}
        dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        return {"revision": head.stdout.strip(), "dirty": bool(dirty.stdout.strip()), "source": str(source)}
    except (OSError, subprocess.TimeoutExpired) as err:
        return {"revision": None, "note": f"git unavailable: {err}"}


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
