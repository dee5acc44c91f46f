"""Trajectories: the LVKC tags, rendering, and the strict and lenient parsers (see ``medsage.scaffold``)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from medsage.scaffold.issues import ScaffoldError, ScaffoldIssue
from medsage.scaffold.regions import Region, parse_regions

# Stage key -> tag name. Order is the LVKC order; the answer closes every trajectory.
STAGE_TAGS: dict[str, str] = {"loc": "LOC", "vis": "VISUAL", "know": "KNOWLEDGE", "con": "CON"}
ANSWER_TAG = "ANSWER"
CHECK_TAG = "CHECK"
STAGES: tuple[str, ...] = tuple(STAGE_TAGS)
TRAJECTORY_TAGS: tuple[str, ...] = (*STAGE_TAGS.values(), ANSWER_TAG)
ALL_TAGS: tuple[str, ...] = (*TRAJECTORY_TAGS, CHECK_TAG)
_TAG_TO_FIELD = {**{tag: key for key, tag in STAGE_TAGS.items()}, ANSWER_TAG: "answer", CHECK_TAG: "check"}

# Strict tags are written exactly; lenient tags may carry case changes and inner whitespace.
_STRICT_TAG_RE = re.compile(r"<(/?)(" + "|".join(ALL_TAGS) + r")>")
_LENIENT_TAG_RE = re.compile(r"<\s*(/?)\s*(" + "|".join(ALL_TAGS) + r")\s*>", re.IGNORECASE)
_BOLD_RE = re.compile(r"^(\*\*|__|\*|_)(.+?)\1$", re.DOTALL)


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


def render_revision(check: str, revised: str) -> str:
    """What the policy writes after the self-check request (§3.3): the check span, then the revised trajectory.

    A space follows ``<CHECK>``. The RL loop encodes the opener on its own and the policy continues from it;
    with the space a byte-level BPE tokenizer (Qwen's pre-tokenizer splits before it) cuts this text at the
    same place, so an SFT row teaches exactly the tokens the loop samples (``>Visual`` could merge instead).
    """
    if not check.strip():
        raise ValueError("self-check text is empty")
    return f"<{CHECK_TAG}> {check.strip()}</{CHECK_TAG}>{revised}"


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
