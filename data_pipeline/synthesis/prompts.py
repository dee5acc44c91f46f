"""Prompt recipes for synthesis: stage prompts, interpretation templates T and the knowledge table.

They live in YAML (``recipes/synthesis/``) so they can be edited without code. Loading checks them:
every stage is present with a ``system`` and a ``user`` text, and each text uses exactly the
placeholders its stage fills; a wrong file fails here with the file and the reason, not mid-run.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

# The placeholders each stage's user text may use (the system text takes none).
PLACEHOLDERS: dict[str, frozenset[str]] = {
    "loc": frozenset({"question", "roi_hint"}),
    "vis": frozenset({"question", "roi_summary", "context"}),
    "know": frozenset({"question", "visual_summary", "template", "label", "retrieved"}),
    "con": frozenset({"question", "visual_summary", "knowledge", "answer"}),
    "verify": frozenset({"question", "answer", "trajectory"}),
    "propose": frozenset({"question", "context"}),
    "roi_check": frozenset({"question", "region"}),
}


class PromptError(ValueError):
    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: {reason}")


@dataclass(frozen=True)
class StagePrompt:
    system: str
    user: str

    def render(self, **values: str) -> tuple[str, str]:
        # Only the user text is formatted: the system text may show literal JSON braces.
        return self.system.strip(), self.user.format(**values).strip()


def resolve(path: str | Path) -> Path:
    """A recipe path: absolute, relative to the working directory, or relative to medsage's recipes."""
    from medsage.recipes import recipes_dir

    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    return recipes_dir() / p


def _load_yaml(path: str | Path) -> tuple[Path, dict]:
    import yaml

    p = resolve(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as err:
        raise PromptError(p, f"cannot read: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise PromptError(p, f"not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise PromptError(p, "expected a mapping at the top level")
    return p, data


def load_prompts(path: str | Path) -> dict[str, StagePrompt]:
    """Stage name -> prompt, for loc, vis, know, con, verify, propose and roi_check."""
    p, data = _load_yaml(path)
    prompts: dict[str, StagePrompt] = {}
    for stage, allowed in PLACEHOLDERS.items():
        entry = data.get(stage)
        if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) and entry[k].strip()
                                                  for k in ("system", "user")):
            raise PromptError(p, f"stage {stage!r} needs non-empty 'system' and 'user' texts")
        try:
            used = {name for _, name, _, _ in string.Formatter().parse(entry["user"]) if name is not None}
        except ValueError as err:
            raise PromptError(p, f"stage {stage!r}: bad placeholder syntax in 'user' ({err})") from None
        if unknown := used - allowed:
            raise PromptError(p, f"stage {stage!r}: unknown placeholder(s) {sorted(unknown)}; "
                                 f"allowed: {sorted(allowed)}")
        prompts[stage] = StagePrompt(entry["system"], entry["user"])
    if extra := set(data) - set(PLACEHOLDERS):
        raise PromptError(p, f"unknown stage(s) {sorted(extra)}")
    return prompts


def load_templates(path: str | Path) -> dict[str, str]:
    """The interpretation templates T: name -> angle text, in file order."""
    p, data = _load_yaml(path)
    templates = data.get("templates")
    if not isinstance(templates, dict) or not templates:
        raise PromptError(p, "needs a non-empty 'templates' mapping (name -> text)")
    bad = [k for k, v in templates.items() if not isinstance(v, str) or not v.strip()]
    if bad:
        raise PromptError(p, f"template(s) {bad} have no text")
    return {str(k): v.strip() for k, v in templates.items()}


def load_knowledge(path: str | Path, templates: dict[str, str]) -> dict[str, dict[str, str]]:
    """The template synthesizer's table: label -> template -> sentence; every label covers every template."""
    p, data = _load_yaml(path)
    table = data.get("knowledge")
    if not isinstance(table, dict) or "_default" not in table:
        raise PromptError(p, "needs a 'knowledge' mapping with a '_default' entry")
    out: dict[str, dict[str, str]] = {}
    for label, entry in table.items():
        missing = [t for t in templates if not isinstance((entry or {}).get(t), str) or not entry[t].strip()]
        if missing:
            raise PromptError(p, f"label {label!r} has no sentence for template(s) {missing}")
        out[str(label).strip().lower()] = {t: entry[t].strip() for t in templates}
    return out
