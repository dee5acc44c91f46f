"""docs/paper_fidelity.md: every override it names composes against medsage's recipes (the key exists)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from medsage.recipes import compose, recipes_dir

DOC = Path(__file__).resolve().parents[2] / "docs" / "paper_fidelity.md"
# the command a row names -> the recipe it composes (what that command composes)
ROOTS = {"rl": "rl", "sft": "sft", "eval run": "eval", "pipeline": "pipeline", "data synth run": "synthesis/default"}
_COMMAND_RE = re.compile(r"`medsage (" + "|".join(sorted(ROOTS, key=len, reverse=True)) + r") ([^`]+)`")


def commands() -> list[tuple[str, list[str]]]:
    return [(m.group(1), shlex.split(m.group(2))) for m in _COMMAND_RE.finditer(DOC.read_text(encoding="utf-8"))]


def test_the_page_lists_departures_with_overrides():
    text = DOC.read_text(encoding="utf-8")
    rows = [line for line in text.splitlines() if re.match(r"\| \d+ \|", line)]
    assert len(rows) >= 10 and all(line.count(" | ") >= 4 for line in rows), rows  # #, paper, medsage, why, override
    assert len(commands()) >= 10


def _is_group(key: str) -> bool:
    """``rl=grpo``, ``+experiment=paper_table3``: a config group selection, not a value."""
    return (recipes_dir() / key.lstrip("+")).is_dir()


@pytest.mark.parametrize("stage, overrides", commands(), ids=lambda v: v if isinstance(v, str) else " ".join(v))
def test_every_named_override_composes(stage, overrides):
    compose(ROOTS[stage], overrides)  # Hydra refuses a key the recipe does not have, or a group option it lacks
    base = compose(ROOTS[stage], [o for o in overrides if _is_group(o.partition("=")[0])])
    for override in overrides:
        key = override.partition("=")[0]
        if _is_group(key):
            continue
        parent, _, leaf = key.lstrip("+").rpartition(".")
        node = OmegaConf.select(base, parent) if parent else base
        assert node is not None, f"{key}: {parent} is not in the {stage} recipe"
        if not key.startswith("+"):  # "+key" adds a key under an existing node; a plain key must be there already
            assert leaf in list(node.keys()), f"{key} is not a key of the {stage} recipe"  # "???" values count
