"""The LVKC scaffold: the one place that knows the tags, renders trajectories and parses them back.

A trajectory is Localization -> Visual analysis -> Knowledge matching -> Conclusion, then the
answer (paper §3.2, Figure 12):

    <LOC>...</LOC><VISUAL>...</VISUAL><KNOWLEDGE>...</KNOWLEDGE><CON>...</CON><ANSWER>...</ANSWER>

The self-check retry (§3.3) appends ``<CHECK>...</CHECK>`` and a revised trajectory.

Two parsers:
- ``parse_strict`` / ``check_strict`` for the format reward and the data writers: every defect is
  reported with a code, the tag and the character offset;
- ``parse_lenient`` for evaluating real model output, which recovers stages from the oddities the
  paper's own Figure 12 shows (a stage "closed" by opening the same tag again, tags with whitespace
  and newlines, markdown bold around the answer, a free-text preamble before ``<LOC>``).

Regions inside ``<LOC>`` use the paper's JSON: ``{"box_2d": [y1, x1, y2, x2], "label": ...}`` or
``{"point": [y, x], "label": ...}`` on a 0-1000 grid. Invalid region JSON is reported, never dropped.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Literal

# Stage key -> tag name. Order is the LVKC order; the answer closes every trajectory.
STAGE_TAGS: dict[str, str] = {"loc": "LOC", "vis": "VISUAL", "know": "KNOWLEDGE", "con": "CON"}
ANSWER_TAG = "ANSWER"
CHECK_TAG = "CHECK"
STAGES: tuple[str, ...] = tuple(STAGE_TAGS)
TRAJECTORY_TAGS: tuple[str, ...] = (*STAGE_TAGS.values(), ANSWER_TAG)
ALL_TAGS: tuple[str, ...] = (*TRAJECTORY_TAGS, CHECK_TAG)
_TAG_TO_FIELD = {**{tag: key for key, tag in STAGE_TAGS.items()}, ANSWER_TAG: "answer", CHECK_TAG: "check"}

GRID = 1000  # the paper's normalised coordinate grid

# Strict tags are written exactly; lenient tags may carry case changes and inner whitespace.
_STRICT_TAG_RE = re.compile(r"<(/?)(" + "|".join(ALL_TAGS) + r")>")
_LENIENT_TAG_RE = re.compile(r"<\s*(/?)\s*(" + "|".join(ALL_TAGS) + r")\s*>", re.IGNORECASE)
_BOLD_RE = re.compile(r"^(\*\*|__|\*|_)(.+?)\1$", re.DOTALL)

IssueCode = Literal[
    "missing_stage", "wrong_order", "duplicate", "unclosed", "stray_close",
    "empty_stage", "text_outside", "invalid_region", "missing_region",
]


@dataclass(frozen=True)
class ScaffoldIssue:
    """One defect found by the strict parser."""

    code: IssueCode
    tag: str | None
    offset: int | None
    message: str

    def __str__(self) -> str:
        where = f" at char {self.offset}" if self.offset is not None else ""
        return f"{self.code}{where}: {self.message}"


class ScaffoldError(ValueError):
    """Raised by ``parse_strict``; carries every issue found, not just the first."""

    def __init__(self, issues: list[ScaffoldIssue]):
        self.issues = issues
        super().__init__("invalid LVKC trajectory: " + "; ".join(str(i) for i in issues))


# --------------------------------------------------------------------------------------------
# Regions inside <LOC>
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Region:
    """A box ``(y1, x1, y2, x2)`` or a point ``(y, x)`` on the 0-1000 grid, with an optional label."""

    kind: Literal["box", "point"]
    coords: tuple[int, ...]
    label: str | None = None

    def to_json(self) -> str:
        key = "box_2d" if self.kind == "box" else "point"
        obj: dict = {key: list(self.coords)}
        if self.label is not None:
            obj["label"] = self.label
        return json.dumps(obj, ensure_ascii=False)

    def to_pixels(self, width: int, height: int) -> tuple[float, ...]:
        """Pixel coordinates in image order: a box as ``(x1, y1, x2, y2)``, a point as ``(x, y)``."""
        if self.kind == "box":
            y1, x1, y2, x2 = self.coords
            return (x1 * width / GRID, y1 * height / GRID, x2 * width / GRID, y2 * height / GRID)
        y, x = self.coords
        return (x * width / GRID, y * height / GRID)

    @classmethod
    def box_from_pixels(cls, box: tuple[float, float, float, float], width: int, height: int,
                        label: str | None = None) -> "Region":
        """From a pixel box ``(x1, y1, x2, y2)``; clipped to the image and rounded onto the grid."""
        if width <= 0 or height <= 0:
            raise ValueError(f"image size must be positive, got {width}x{height}")
        x1, y1, x2, y2 = box
        if x2 < x1 or y2 < y1:
            raise ValueError(f"pixel box {box} has x2 < x1 or y2 < y1")

        def grid(v: float, size: int) -> int:
            return int(round(min(max(v, 0.0), size) * GRID / size))

        return cls("box", (grid(y1, height), grid(x1, width), grid(y2, height), grid(x2, width)), label)

    @classmethod
    def point_from_pixels(cls, point: tuple[float, float], width: int, height: int,
                          label: str | None = None) -> "Region":
        """From a pixel point ``(x, y)``."""
        if width <= 0 or height <= 0:
            raise ValueError(f"image size must be positive, got {width}x{height}")
        x, y = point
        gy = int(round(min(max(y, 0.0), height) * GRID / height))
        gx = int(round(min(max(x, 0.0), width) * GRID / width))
        return cls("point", (gy, gx), label)


def _region_from_obj(obj: object) -> tuple[Region | None, str | None]:
    if not isinstance(obj, dict):
        return None, f"expected a JSON object, got {type(obj).__name__}"
    if ("box_2d" in obj) == ("point" in obj):
        return None, 'needs exactly one of "box_2d" or "point"'
    key, n = ("box_2d", 4) if "box_2d" in obj else ("point", 2)
    coords = obj[key]
    if not isinstance(coords, list) or len(coords) != n:
        return None, f'"{key}" must be a list of {n} numbers'
    if not all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in coords):
        return None, f'"{key}" must hold numbers only'
    if not all(0 <= c <= GRID for c in coords):
        return None, f'"{key}" {coords} is outside the 0-{GRID} grid'
    if key == "box_2d" and (coords[2] < coords[0] or coords[3] < coords[1]):
        return None, f'"box_2d" {coords} has y2 < y1 or x2 < x1 (order is [y1, x1, y2, x2])'
    label = obj.get("label")
    if label is not None and not isinstance(label, str):
        return None, '"label" must be a string'
    return Region("box" if key == "box_2d" else "point", tuple(int(round(c)) for c in coords), label), None


def parse_regions(loc_text: str, base_offset: int = 0) -> tuple[list[Region], list[ScaffoldIssue]]:
    """Every ``{...}`` region in a ``<LOC>`` text; bad JSON or a bad schema is an issue, not a skip."""
    regions: list[Region] = []
    issues: list[ScaffoldIssue] = []
    decoder = json.JSONDecoder()
    pos = 0
    while (start := loc_text.find("{", pos)) != -1:
        try:
            obj, end = decoder.raw_decode(loc_text, start)
        except json.JSONDecodeError as err:
            snippet = loc_text[start:start + 60].split("}")[0] + "}"
            issues.append(ScaffoldIssue("invalid_region", "LOC", base_offset + start,
                                        f"region is not valid JSON ({err.msg}): {snippet!r}"))
            close = loc_text.find("}", start)
            pos = start + 1 if close == -1 else close + 1
            continue
        region, problem = _region_from_obj(obj)
        if region is None:
            issues.append(ScaffoldIssue("invalid_region", "LOC", base_offset + start,
                                        f"{problem}: {loc_text[start:end]!r}"))
        else:
            regions.append(region)
        pos = end
    return regions, issues


# --------------------------------------------------------------------------------------------
# Trajectories
# --------------------------------------------------------------------------------------------


@dataclass
class Trajectory:
    """The stages of one LVKC trajectory. ``None`` means the stage was not found (lenient parse)."""

    loc: str | None = None
    vis: str | None = None
    know: str | None = None
    con: str | None = None
    answer: str | None = None
    preamble: str = ""  # free text before <LOC>, as in Figure 12
    # Lenient parsing records how each field was recovered, so a score can be explained.
    notes: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return all(getattr(self, k) for k in (*STAGES, "answer"))

    def regions(self) -> tuple[list[Region], list[ScaffoldIssue]]:
        return parse_regions(self.loc or "")

    def names_region(self) -> bool:
        """``<LOC>`` holds its key information: a valid box/point, or a textual region (words, A.3.4)."""
        regions, issues = self.regions()
        text = re.sub(r"\{[^{}]*\}", " ", self.loc or "")  # the words around any region JSON
        return not issues and (bool(regions) or len(re.findall(r"[^\W\d_]{2,}", text)) >= 1)

    def render(self) -> str:
        """The canonical tagged text; every stage and the answer must be present."""
        missing = [k for k in (*STAGES, "answer") if not (getattr(self, k) or "").strip()]
        if missing:
            raise ValueError(f"cannot render a trajectory with empty stage(s): {', '.join(missing)}")
        body = "".join(f"<{tag}>{getattr(self, key).strip()}</{tag}>" for key, tag in STAGE_TAGS.items())
        text = f"{body}<{ANSWER_TAG}>{self.answer.strip()}</{ANSWER_TAG}>"
        return f"{self.preamble.strip()} {text}" if self.preamble.strip() else text

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in (*STAGES, "answer")} | ({"preamble": self.preamble} if self.preamble else {})

    @classmethod
    def from_dict(cls, d: dict) -> "Trajectory":
        unknown = set(d) - {*STAGES, "answer", "preamble"}
        if unknown:
            raise ValueError(f"unknown trajectory field(s): {sorted(unknown)}")
        return cls(**d)


def render(loc: str, vis: str, know: str, con: str, answer: str, preamble: str = "") -> str:
    return Trajectory(loc, vis, know, con, answer, preamble).render()


def render_check(check: str) -> str:
    """The self-check span written between the first and the revised trajectory."""
    if not check.strip():
        raise ValueError("self-check text is empty")
    return f"<{CHECK_TAG}>{check.strip()}</{CHECK_TAG}>"


@dataclass(frozen=True)
class _Tag:
    closing: bool
    name: str  # upper-case tag name
    start: int
    end: int


def _tags(text: str, pattern: re.Pattern) -> list[_Tag]:
    return [_Tag(m.group(1) == "/", m.group(2).upper(), m.start(), m.end()) for m in pattern.finditer(text)]


def check_strict(text: str, *, allow_preamble: bool = False, require_region: bool = False,
                 allow_check: bool = False) -> tuple[Trajectory, list[ScaffoldIssue]]:
    """Parse ``text`` strictly and return the stages found plus every defect.

    ``allow_preamble``: free text before ``<LOC>`` (Figure 12 style) is not an error.
    ``require_region``: ``<LOC>`` must hold at least one box or point (format reward's key information).
    ``allow_check``: accept ``τ1 <CHECK>...</CHECK> τ2`` and check both trajectories; the returned
    trajectory is the revised one.
    """
    if allow_check:
        return _check_retry(text, allow_preamble=allow_preamble, require_region=require_region)
    issues: list[ScaffoldIssue] = []
    found: dict[str, tuple[str, int]] = {}  # tag -> (content, offset)
    seen_order: list[tuple[str, int]] = []
    open_tag: _Tag | None = None
    cursor = 0

    def outside_text(upto: int) -> None:
        chunk = text[cursor:upto]
        if chunk.strip() and not (allow_preamble and cursor == 0 and not seen_order):
            lead = len(chunk) - len(chunk.lstrip())
            issues.append(ScaffoldIssue("text_outside", None, cursor + lead,
                                        f"text outside the scaffold tags: {chunk.strip()[:40]!r}"))

    for tag in _tags(text, _STRICT_TAG_RE):
        if open_tag is None:
            if tag.closing:
                outside_text(tag.start)
                issues.append(ScaffoldIssue("stray_close", tag.name, tag.start,
                                            f"</{tag.name}> closes a tag that is not open"))
            else:
                outside_text(tag.start)
                open_tag = tag
            cursor = tag.end
            continue
        if tag.closing and tag.name == open_tag.name:
            content = text[open_tag.end:tag.start]
            name = open_tag.name
            if name == CHECK_TAG:
                issues.append(ScaffoldIssue("stray_close", name, open_tag.start,
                                            f"<{CHECK_TAG}> only belongs in a self-check retry"))
            elif name in found:
                issues.append(ScaffoldIssue("duplicate", name, open_tag.start, f"<{name}> appears more than once"))
            else:
                found[name] = (content, open_tag.end)
                seen_order.append((name, open_tag.start))
                if not content.strip():
                    issues.append(ScaffoldIssue("empty_stage", name, open_tag.end, f"<{name}> is empty"))
            open_tag = None
        elif tag.closing:
            issues.append(ScaffoldIssue("stray_close", tag.name, tag.start,
                                        f"</{tag.name}> inside <{open_tag.name}>"))
            continue  # keep looking for the right closing tag
        else:
            issues.append(ScaffoldIssue("unclosed", open_tag.name, open_tag.start,
                                        f"<{open_tag.name}> is not closed before <{tag.name}>"))
            if open_tag.name not in found:  # record what it held, so later checks still run
                found[open_tag.name] = (text[open_tag.end:tag.start], open_tag.end)
                seen_order.append((open_tag.name, open_tag.start))
            if tag.name == open_tag.name:  # "<KNOWLEDGE>...<KNOWLEDGE>": a mistyped close, not a new stage
                open_tag = None
                cursor = tag.end
                continue
            open_tag = tag
        cursor = tag.end
    if open_tag is not None:
        issues.append(ScaffoldIssue("unclosed", open_tag.name, open_tag.start, f"<{open_tag.name}> is never closed"))
        if open_tag.name not in found:
            found[open_tag.name] = (text[open_tag.end:], open_tag.end)
            seen_order.append((open_tag.name, open_tag.start))
    else:
        outside_text(len(text))

    for name in TRAJECTORY_TAGS:
        if name not in found:
            issues.append(ScaffoldIssue("missing_stage", name, None, f"<{name}> is missing"))
    rank = {name: i for i, name in enumerate(TRAJECTORY_TAGS)}
    ordered = [(n, off) for n, off in seen_order if n in rank]
    for (prev, _), (cur, off) in zip(ordered, ordered[1:]):
        if rank[cur] < rank[prev]:
            issues.append(ScaffoldIssue("wrong_order", cur, off, f"<{cur}> comes after <{prev}>"))

    if loc := found.get("LOC"):
        regions, region_issues = parse_regions(*loc)
        issues.extend(region_issues)
        if require_region and not regions and not region_issues:
            issues.append(ScaffoldIssue("missing_region", "LOC", loc[1], "<LOC> names no box_2d or point region"))

    first = seen_order[0][1] if seen_order else len(text)
    traj = Trajectory(
        **{key: found[tag][0].strip() if tag in found else None for key, tag in STAGE_TAGS.items()},
        answer=found[ANSWER_TAG][0].strip() if ANSWER_TAG in found else None,
        preamble=text[:first].strip() if allow_preamble else "",
    )
    issues.sort(key=lambda i: (i.offset is None, i.offset or 0))
    return traj, issues


def _check_retry(text: str, *, allow_preamble: bool, require_region: bool) -> tuple[Trajectory, list[ScaffoldIssue]]:
    parts = split_retry(text)
    if parts is None:
        return check_strict(text, allow_preamble=allow_preamble, require_region=require_region)
    first, check, second = parts
    _, issues1 = check_strict(first, allow_preamble=allow_preamble, require_region=require_region)
    traj, issues2 = check_strict(second, allow_preamble=allow_preamble, require_region=require_region)
    issues = list(issues1)
    if not check.strip():
        issues.append(ScaffoldIssue("empty_stage", CHECK_TAG, len(first), f"<{CHECK_TAG}> is empty"))
    shift = len(text) - len(second)
    issues += [ScaffoldIssue(i.code, i.tag, None if i.offset is None else i.offset + shift, i.message) for i in issues2]
    return traj, issues


def parse_strict(text: str, **kwargs) -> Trajectory:
    """Like ``check_strict`` but raises ``ScaffoldError`` listing every issue."""
    traj, issues = check_strict(text, **kwargs)
    if issues:
        raise ScaffoldError(issues)
    return traj


def split_retry(text: str) -> tuple[str, str, str] | None:
    """Split ``τ1 <CHECK>c</CHECK> τ2`` into ``(τ1, c, τ2)``; ``None`` when there is no exact check span."""
    start = text.find(f"<{CHECK_TAG}>")
    if start == -1:
        return None
    end = text.find(f"</{CHECK_TAG}>", start)
    if end == -1:
        return None
    return text[:start], text[start + len(CHECK_TAG) + 2:end], text[end + len(CHECK_TAG) + 3:]


def strip_emphasis(answer: str) -> str:
    """Remove markdown bold/italic and quotes around an answer: ``**Chest**`` -> ``Chest``."""
    s = answer.strip()
    while True:
        m = _BOLD_RE.match(s)
        if not m:
            break
        s = m.group(2).strip()
    return s.strip().strip('"\u201c\u201d').strip()


def parse_lenient(text: str) -> Trajectory:
    """Recover stages and the answer from real model output; never raises.

    A stage runs from its opening tag to its closing tag or, failing that, to the next scaffold tag
    of any kind (Figure 12 "closes" ``<KNOWLEDGE>`` and ``<LOC>`` by repeating them). The first
    occurrence of a stage wins. For a self-check retry the revised trajectory (after ``</CHECK>``)
    is the one returned. ``notes`` says what was recovered and how.
    """
    tags = _tags(text, _LENIENT_TAG_RE)
    # A retry: keep only what follows the last closed check span.
    check_closes = [t for t in tags if t.name == CHECK_TAG and t.closing]
    notes: list[str] = []
    if check_closes:
        cut = check_closes[-1].end
        tags = [t for t in tags if t.start >= cut]
        notes.append("used the revised trajectory after </CHECK>")
    else:
        cut = 0
    values: dict[str, str] = {}
    for i, tag in enumerate(tags):
        if tag.closing or tag.name == CHECK_TAG or tag.name in values:
            continue
        nxt = tags[i + 1] if i + 1 < len(tags) else None
        end = nxt.start if nxt else len(text)
        if nxt is None:
            notes.append(f"<{tag.name}> unclosed, read to end of text")
        elif not (nxt.closing and nxt.name == tag.name):
            how = "a repeated opening tag" if nxt.name == tag.name and not nxt.closing else f"<{'/' if nxt.closing else ''}{nxt.name}>"
            notes.append(f"<{tag.name}> closed by {how}")
        values[tag.name] = text[tag.end:end].strip()
    first_stage = min((t.start for t in tags if not t.closing), default=len(text))
    answer = values.get(ANSWER_TAG)
    if answer is not None:
        stripped = strip_emphasis(answer)
        if stripped != answer:
            notes.append("removed emphasis around the answer")
        answer = stripped or None
    return Trajectory(
        **{key: values.get(tag) or None for key, tag in STAGE_TAGS.items()},
        answer=answer,
        preamble=text[cut:first_stage].strip(),
        notes=notes,
    )
