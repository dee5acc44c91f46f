"""Reader of RL rollout dumps: medsage's rollout JSON lines (``ROLLOUT_FIELDS``) and verl's own
``trainer.rollout_data_dir`` files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medsage.eval.view.items import (
    ViewItem,
    final_answer,
    image_ref,
    json_lines,
    malformed,
    parse_options,
    traces_from_response,
)
from medsage.eval.view.records import split_prompt
from medsage.vocab import IMAGE_PLACEHOLDER

# medsage's RL rollout dump, one JSON object per line (defined here: verl's own dump has no images,
# options or spans). Required: response, ground_truth. Everything else is optional.
ROLLOUT_FIELDS = {
    "id": "row id (extra_info.id of the RL row)",
    "step": "training step",
    "data_source": "source of the RL row",
    "prompt": "the question text, or the chat list [{role, content}] sent to the policy",
    "response": "decoded response; a retry is τ1 [request] <CHECK>...</CHECK> τ2",
    "images": "image paths",
    "ground_truth": "reward_model.ground_truth",
    "question_type": "closed | choice | open",
    "options": "letter -> text for choice questions",
    "modality": "imaging modality",
    "rewards": "{overall, <component>: value, ...} as the reward returned them",
    "spans": "what the retry loop recorded (retried, first_correct, self_check_reward, ...); shown as is",
}


def rollout_record(response: str, ground_truth: str, *, prompt: Any = None, images: list[str] | None = None,
                   rewards: dict[str, float] | None = None, spans: dict | None = None, **extra: Any) -> dict:
    """One line of medsage's rollout dump (``ROLLOUT_FIELDS``), for the RL stage to write."""
    unknown = set(extra) - set(ROLLOUT_FIELDS)
    if unknown:
        raise ValueError(f"unknown rollout field(s) {sorted(unknown)}; known: {sorted(ROLLOUT_FIELDS)}")
    return {"response": response, "ground_truth": ground_truth, "prompt": prompt, "images": list(images or []),
            "rewards": dict(rewards or {}), "spans": dict(spans or {}), **extra}



# --------------------------------------------------------------------------------------------
# RL rollouts
# --------------------------------------------------------------------------------------------

_VERL_KEYS = {"input", "output", "gts", "score", "step"}


def is_rollout(obj: dict) -> bool:
    return "response" in obj and "ground_truth" in obj


def is_verl_dump(obj: dict) -> bool:
    return _VERL_KEYS <= set(obj)


def prompt_text(prompt: Any) -> str:
    if isinstance(prompt, list):  # chat list: the user turns hold the question
        users = [m.get("content", "") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        return "\n".join(c if isinstance(c, str) else json.dumps(c) for c in users)
    return str(prompt or "")


def _rollout_verdict(item: ViewItem) -> None:
    acc = item.rewards.get("accuracy", item.rewards.get("acc"))
    if acc is not None:
        item.verdict = "correct" if acc >= 1.0 else "wrong"
    else:
        item.verdict = "scored" if item.rewards else "unscored"


def _rollout_item(obj: dict, where: str, base: Path) -> ViewItem:
    question, options = split_prompt(prompt_text(obj.get("prompt")).replace(IMAGE_PLACEHOLDER, ""))
    item = ViewItem(id=str(obj.get("id", where.rsplit(":", 1)[-1])), kind="rollout", where=where,
                    source=obj.get("data_source"), question_type=obj.get("question_type"),
                    modality=obj.get("modality"), question=question,
                    options=parse_options(obj.get("options")) or options, ground_truth=str(obj.get("ground_truth")),
                    images=[image_ref(p, base) for p in obj.get("images") or []])
    rewards = obj.get("rewards") or {}
    if not isinstance(rewards, dict):
        item.problems.append(f"'rewards' must be an object of component -> value, got {type(rewards).__name__}")
        rewards = {}
    item.rewards = {str(k): float(v) for k, v in rewards.items() if isinstance(v, (int, float))}
    if not item.images:
        item.problems.append("no image recorded for this rollout")
    item.traces, item.check, problems = traces_from_response(str(obj.get("response") or ""))
    item.problems += problems
    item.answer = final_answer(item.traces)
    if obj.get("step") is not None:
        item.details["step"] = obj["step"]
    if obj.get("spans"):
        item.details["spans"] = obj["spans"]
    _rollout_verdict(item)
    return item


def _verl_item(obj: dict, where: str) -> ViewItem:
    """A line of verl's ``rollout_data_dir`` dump: decoded prompt and response, score, components."""
    item = ViewItem(id=str(obj.get("request_id") or where.rsplit("/", 1)[-1]), kind="rollout", where=where,
                    question=str(obj.get("input") or ""), ground_truth=None if obj.get("gts") is None else str(obj["gts"]))
    skip = _VERL_KEYS | {"request_id", SPANS_DUMP_KEY}
    item.rewards = {"score": float(obj["score"])} if isinstance(obj.get("score"), (int, float)) else {}
    item.rewards |= {k: float(v) for k, v in obj.items()
                     if k not in skip and isinstance(v, (int, float)) and not isinstance(v, bool)}
    item.problems.append("verl's rollout dump records no image (write medsage's rollout format to see them)")
    item.traces, item.check, problems = traces_from_response(str(obj.get("output") or ""))
    item.problems += problems
    item.answer = final_answer(item.traces)
    item.details["step"] = obj.get("step")
    item.details |= {k: v for k, v in obj.items() if k not in skip and k not in item.rewards}
    if obj.get(SPANS_DUMP_KEY):
        _mark_spans(item, obj[SPANS_DUMP_KEY])
    _rollout_verdict(item)
    return item


SPANS_DUMP_KEY = "medsage_spans"  # medsage.plugins.self_check.advantage.SPANS_DUMP_KEY (no verl import here)
_SPAN_TITLES = {"tau1": "τ1", "request": "request", "check": "self-check", "tau2": "τ2"}


def _mark_spans(item: ViewItem, spans: Any) -> None:
    """Put the advantage each span was trained with on the τ1 / τ2 traces and beside the check."""
    try:
        rows = [(str(name), str(text), float(adv)) for name, text, adv in spans]
    except (TypeError, ValueError):
        item.problems.append(f"'{SPANS_DUMP_KEY}' must be a list of [span, text, advantage], got {spans!r:.120}")
        return
    adv = {name: a for name, _, a in rows if name != "request"}
    item.details["spans"] = " | ".join(f"{_SPAN_TITLES.get(n, n)} {len(t)} chars, advantage {a:+.4f}"
                                       for n, t, a in rows)
    if len(item.traces) == 1 and "tau1" in adv:  # accepted at τ1 (or no closed check span)
        item.traces[0].title = f"τ1 (advantage {adv['tau1']:+.4f})"
    elif len(item.traces) == 2:  # τ1 first try, τ2 after self-check
        for trace, key in zip(item.traces, ("tau1", "tau2")):
            if key in adv:
                trace.title += f" (advantage {adv[key]:+.4f})"
    if "check" in adv:
        item.details["self-check advantage"] = f"{adv['check']:+.4f}"


def rollout_file(path: Path) -> list[ViewItem]:
    items = []
    for n, obj, error, raw in json_lines(path):
        where = f"{path}:{n}"
        if obj is None:
            items.append(malformed(where, error, raw))
        elif is_rollout(obj):
            items.append(_rollout_item(obj, where, path.parent))
        elif is_verl_dump(obj):
            items.append(_verl_item(obj, where))
        else:
            items.append(malformed(where, f"not a rollout line (keys {sorted(obj)[:12]})", raw))
    return items


