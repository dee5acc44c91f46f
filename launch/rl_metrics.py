"""The RL stage's per-step metrics on disk: verl's file logger writes them, the report and the benches read them.

verl's file logger (``VERL_FILE_LOGGER_PATH``) opens its file with "wb" on every start, so a resumed run would
erase the steps logged before the interruption. ``medsage rl`` therefore moves a non-empty ``metrics.jsonl``
aside as ``metrics.attempt-NNN.jsonl`` before each launch, and ``read_steps`` joins the attempts in order: a
step logged again by a later attempt (the steps after the last checkpoint are retrained) takes that attempt's
values.

    <rl out>/metrics.jsonl               the latest attempt, one {"step": N, "data": {...}} line per step
    <rl out>/metrics.attempt-001.jsonl   earlier attempts, oldest first
"""

from __future__ import annotations

import json
import re
from pathlib import Path

METRICS = "metrics.jsonl"
_ATTEMPT = re.compile(r"^metrics\.attempt-(\d+)\.jsonl$")


def _attempts(folder: Path) -> list[Path]:
    found = [(int(m.group(1)), p) for p in folder.glob("metrics.attempt-*.jsonl") if (m := _ATTEMPT.match(p.name))]
    return [p for _, p in sorted(found)]


def keep_earlier_attempt(out_dir: Path) -> Path | None:
    """Move a non-empty ``metrics.jsonl`` aside before verl starts again; returns where it went."""
    current = out_dir / METRICS
    if not current.is_file() or current.stat().st_size == 0:
        return None
    taken = [int(_ATTEMPT.match(p.name).group(1)) for p in _attempts(out_dir)]
    target = out_dir / f"metrics.attempt-{max(taken, default=0) + 1:03d}.jsonl"
    current.replace(target)
    return target


def read_steps(path: str | Path) -> dict[int, dict]:
    """``{step: metrics}`` from ``path`` (an RL run's ``metrics.jsonl``) and the earlier attempts beside it, later
    attempts winning; a torn last line (a kill mid-write) is skipped. Empty when there is no such file."""
    path = Path(path)
    steps: dict[int, dict] = {}
    for file in [*_attempts(path.parent), path] if path.name == METRICS else [path]:
        if not file.is_file():
            continue
        for line in file.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # the line a killed logger was writing
            if isinstance(entry, dict) and isinstance(entry.get("step"), int):
                steps[entry["step"]] = {**steps.get(entry["step"], {}), **(entry.get("data") or {})}
    return dict(sorted(steps.items()))
