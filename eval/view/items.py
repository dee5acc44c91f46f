"""The one item shape every reader of ``medsage view`` produces, and the helpers they share: trajectories
read with ``medsage.scaffold``, JSON lines that keep their bad lines, images resolved and measured."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medsage.scaffold import (
    ANSWER_TAG,
    STAGE_TAGS,
    Trajectory,
    check_strict,
    parse_lenient,
    parse_regions,
    split_retry,
)

STAGE_KEYS: tuple[str, ...] = (*STAGE_TAGS, "answer")  # loc, vis, know, con, answer


class ViewerInputError(ValueError):
    """PATH is not something ``medsage view`` knows; the message names the file and what was expected."""


@dataclass
class ImageRef:
    path: str | None        # resolved path on this machine, when it exists
    given: str              # the path as the input wrote it
    problem: str | None = None
    width: int | None = None
    height: int | None = None


@dataclass
class Trace:
    """One trajectory as shown: its stages, regions and what the parsers said about it."""

    title: str
    stages: dict[str, str | None]
    preamble: str = ""
    regions: list[dict] = field(default_factory=list)  # {kind, coords, label}; pixels added later
    issues: list[str] = field(default_factory=list)    # strict format issues (informational)
    notes: list[str] = field(default_factory=list)     # how the lenient parser recovered stages
    problems: list[str] = field(default_factory=list)  # missing stages, invalid regions
    final: bool = True                                  # the trajectory whose answer counts


@dataclass
class ViewItem:
    id: str
    kind: str                                   # sft | record | rejection | rollout | prediction | malformed
    where: str                                  # file:line it came from
    source: str | None = None                   # source / benchmark / data_source
    question_type: str | None = None
    modality: str | None = None
    verdict: str = "unknown"                    # kept | rejected | correct | wrong | unparsed | unscored
    reason_codes: list[str] = field(default_factory=list)  # for the filter
    reasons: list[str] = field(default_factory=list)       # full text, shown
    question: str | None = None
    options: dict[str, str] | None = None
    ground_truth: str | None = None
    answer: str | None = None
    traces: list[Trace] = field(default_factory=list)
    check: str | None = None                    # the self-check span text
    rewards: dict[str, float] = field(default_factory=dict)
    judge: dict[str, float | None] = field(default_factory=dict)  # GPT-score per dimension (eval judge)
    images: list[ImageRef] = field(default_factory=list)
    rois: list[dict] = field(default_factory=list)  # annotation RoIs in pixels {box, label, origin}
    problems: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)

    def all_problems(self) -> list[str]:
        out = list(self.problems)
        for t in self.traces:
            out += [f"{t.title}: {p}" for p in t.problems]
        out += [f"image {i + 1}: {im.problem}" for i, im in enumerate(self.images) if im.problem]
        return out


@dataclass
class Loaded:
    kind: str           # what PATH was, in words
    path: Path
    items: list[ViewItem]
    notes: list[str] = field(default_factory=list)   # what was read, for the page header


# --------------------------------------------------------------------------------------------
# Trajectories
# --------------------------------------------------------------------------------------------


def _regions(loc: str | None) -> tuple[list[dict], list[str]]:
    regions, issues = parse_regions(loc or "")
    return ([{"kind": r.kind, "coords": list(r.coords), "label": r.label} for r in regions],
            [i.message for i in issues])


def trace_from_text(title: str, text: str, *, final: bool = True, expect_outside: bool = False) -> Trace:
    """Stages from model text: lenient for what is shown, strict for the issues listed beside it."""
    traj = parse_lenient(text)
    _, issues = check_strict(text, allow_preamble=True)
    if expect_outside:  # τ1 of a retry carries the self-check request after its answer
        issues = [i for i in issues if i.code != "text_outside"]
    regions, region_problems = _regions(traj.loc)
    problems = [f"<{tag}> not found" for key, tag in (*STAGE_TAGS.items(), ("answer", ANSWER_TAG))
                if not getattr(traj, key)]
    if not text.strip():
        problems = ["empty text"]
    return Trace(title, {k: getattr(traj, k) for k in STAGE_KEYS}, traj.preamble, regions,
                 [str(i) for i in issues], list(traj.notes), problems + region_problems, final)


def trace_from_trajectory(title: str, traj: Trajectory, *, final: bool = True) -> Trace:
    """Stages a record already holds; the strict check runs on their canonical rendering."""
    missing = [f"<{tag}> is empty" for key, tag in (*STAGE_TAGS.items(), ("answer", ANSWER_TAG))
               if not (getattr(traj, key) or "").strip()]
    issues: list[str] = []
    if not missing:
        _, found = check_strict(traj.render(), allow_preamble=True)
        issues = [str(i) for i in found]
    regions, region_problems = _regions(traj.loc)
    return Trace(title, {k: getattr(traj, k) for k in STAGE_KEYS}, traj.preamble, regions, issues, [],
                 missing + region_problems, final)


def traces_from_response(text: str) -> tuple[list[Trace], str | None, list[str]]:
    """τ1 / self-check / τ2 when the text is a retry, else one trajectory; plus item-level problems."""
    parts = split_retry(text)
    if parts is None:
        trace = trace_from_text("trajectory", text)
        problems = []
        if "used the revised trajectory after </CHECK>" in trace.notes:
            problems.append("the self-check span is not written exactly as <CHECK>...</CHECK>; "
                            "showing the trajectory after it as the lenient parser reads it")
        return [trace], None, problems
    first, check, second = parts
    traces = [trace_from_text("τ1 first try", first, final=False, expect_outside=True),
              trace_from_text("τ2 after self-check", second)]
    return traces, check.strip(), ([] if check.strip() else ["the self-check span is empty"])


def final_answer(traces: list[Trace]) -> str | None:
    finals = [t for t in traces if t.final] or traces
    return finals[-1].stages.get("answer") if finals else None


# --------------------------------------------------------------------------------------------
# Lines and images
# --------------------------------------------------------------------------------------------


def json_lines(path: Path) -> Iterator[tuple[int, dict | None, str | None, str]]:
    """(line number, object or None, error or None, raw line) for every non-empty line."""
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                yield n, None, f"not valid JSON ({err.msg} at column {err.colno})", line
                continue
            if not isinstance(obj, dict):
                yield n, None, f"expected a JSON object, got {type(obj).__name__}", line
                continue
            yield n, obj, None, line


def first_object(path: Path) -> dict | None:
    for _, obj, _, _ in json_lines(path):
        if obj is not None:
            return obj
    return None


def malformed(where: str, error: str, raw: str) -> ViewItem:
    return ViewItem(id=where.rsplit("/", 1)[-1], kind="malformed", where=where, verdict="malformed",
                    problems=[f"{where}: {error}"], details={"raw line": raw.strip()[:4000]})


def image_ref(given: Any, base: Path | None) -> ImageRef:
    """Resolve an image path against the input file's folder (then as given); name what is wrong."""
    if isinstance(given, dict):  # verl/EasyR1 rows: {"image": path} or {"bytes": ...}
        given = given.get("image") or given.get("path") or ("<embedded bytes>" if given.get("bytes") else "")
    given = str(given or "")
    if not given:
        return ImageRef(None, given, "no image path given")
    if given == "<embedded bytes>":
        return ImageRef(None, given, "image bytes embedded in the input are not shown")
    p = Path(given).expanduser()
    candidates = [p] if p.is_absolute() else ([base / p] if base else []) + [p]
    for c in candidates:
        resolved, size, error = image_info(str(c))
        if resolved is not None:
            if error:
                return ImageRef(resolved, given, f"cannot read image {given}: {error}")
            return ImageRef(resolved, given, None, *size)
    return ImageRef(None, given, f"image not found: {given}")


@functools.lru_cache(maxsize=65536)
def image_info(path: str) -> tuple[str | None, tuple[int, int], str | None]:
    """(resolved path or None when absent, (width, height), read error); cached: runs repeat images."""
    c = Path(path)
    if not c.is_file():
        return None, (0, 0), None
    try:
        from PIL import Image

        with Image.open(c) as im:  # reads the header only
            return str(c.resolve()), im.size, None
    except Exception as err:  # noqa: BLE001 - any unreadable image is shown as such
        return str(c.resolve()), (0, 0), str(err)


def parse_options(value: Any) -> dict[str, str] | None:
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else None
        except json.JSONDecodeError:
            return {"?": value}
    if isinstance(value, list):  # parquet pairs
        value = dict(value)
    if not value:
        return None
    return {str(k): str(v) for k, v in sorted(value.items()) if v is not None}

