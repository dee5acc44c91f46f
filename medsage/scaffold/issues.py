"""What the strict parser reports: one ``ScaffoldIssue`` per defect, all of them in a ``ScaffoldError``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

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
