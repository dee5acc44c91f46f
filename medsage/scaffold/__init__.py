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

from medsage.scaffold.issues import IssueCode, ScaffoldError, ScaffoldIssue
from medsage.scaffold.regions import GRID, Region, parse_regions
from medsage.scaffold.trajectory import (
    ALL_TAGS,
    ANSWER_TAG,
    CHECK_TAG,
    STAGE_TAGS,
    STAGES,
    TRAJECTORY_TAGS,
    Trajectory,
    check_strict,
    parse_lenient,
    parse_strict,
    render,
    render_check,
    render_revision,
    split_retry,
    strip_emphasis,
)

__all__ = [
    "ALL_TAGS", "ANSWER_TAG", "CHECK_TAG", "GRID", "STAGES", "STAGE_TAGS", "TRAJECTORY_TAGS", "IssueCode", "Region",
    "ScaffoldError", "ScaffoldIssue", "Trajectory", "check_strict", "parse_lenient", "parse_regions", "parse_strict",
    "render", "render_check", "render_revision", "split_retry", "strip_emphasis",
]
