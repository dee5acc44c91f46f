"""The sample record that flows through the pipeline (docs/design.md, "One record, one scaffold, one matcher"), with JSON round-trip.

Every stage reads and writes records as JSON lines; a bad line is reported with its file and line
number (``read_records``), and writes are atomic (``medsage.io``).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Iterator, Literal, get_args

from medsage.io import atomic_write_jsonl, json_line
from medsage.scaffold import Trajectory
from medsage.vocab import QUESTION_TYPES, QuestionType

RoIKind = Literal["box", "text", "global"]


class RecordError(ValueError):
    """A record that does not fit the schema; ``where`` names the file and line when known."""

    def __init__(self, reason: str, where: str | None = None):
        self.reason, self.where = reason, where
        super().__init__(f"{where}: {reason}" if where else reason)


@dataclass
class RoI:
    """A region of interest: a pixel box ``(x1, y1, x2, y2)``, a text description, or the whole image."""

    kind: RoIKind
    box: tuple[float, float, float, float] | None = None
    text: str | None = None
    label: str | None = None
    origin: str = "annotation"  # annotation | perturb | expand | subregion | global | text-cue

    def __post_init__(self) -> None:
        if self.kind not in get_args(RoIKind):
            raise RecordError(f"RoI kind must be one of {get_args(RoIKind)}, got {self.kind!r}")
        if self.kind == "box":
            if self.box is None or len(self.box) != 4:
                raise RecordError(f"box RoI needs 4 pixel coordinates (x1, y1, x2, y2), got {self.box!r}")
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in self.box):
                raise RecordError(f"box RoI needs 4 finite numbers, got {self.box!r}")
            self.box = tuple(float(v) for v in self.box)
            x1, y1, x2, y2 = self.box
            if x2 <= x1 or y2 <= y1:
                raise RecordError(f"box RoI {self.box} is degenerate (needs x2 > x1 and y2 > y1)")
        if self.text is not None and not isinstance(self.text, str):
            raise RecordError(f"RoI text must be a string, got {type(self.text).__name__}")
        if self.kind == "text" and not (self.text or "").strip():
            raise RecordError("text RoI needs a non-empty text")


@dataclass
class Provenance:
    """Which model or template wrote each trajectory stage."""

    stage: str
    made_by: str
    detail: str | None = None


@dataclass
class Sample:
    """One question about one or more images, and everything the pipeline learns about it."""

    id: str
    source: str
    images: list[str]
    question: str
    answer: str
    question_type: QuestionType
    options: dict[str, str] | None = None  # letter -> text, for choice questions
    modality: str | None = None
    rois: list[RoI] = field(default_factory=list)
    trajectory: Trajectory | None = None
    provenance: list[Provenance] = field(default_factory=list)
    rejection: str | None = None  # why the record was dropped; None while kept
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("id", "source", "question", "answer"):
            if not isinstance(getattr(self, name), str):
                raise RecordError(f"{name} must be a string, got {type(getattr(self, name)).__name__}")
        if not self.id.strip():
            raise RecordError("id is empty")
        if self.options is not None and not (isinstance(self.options, dict) and all(
                isinstance(k, str) and isinstance(v, str) for k, v in self.options.items())):
            raise RecordError(f"options must map letters to strings, got {self.options!r}")
        if self.question_type not in QUESTION_TYPES:
            raise RecordError(f"question_type must be one of {QUESTION_TYPES}, got {self.question_type!r}")
        if not isinstance(self.images, list) or not all(isinstance(p, str) for p in self.images):
            raise RecordError(f"images must be a list of paths, got {self.images!r}")
        if self.question_type == "choice":
            if not self.options:
                raise RecordError("a choice question needs options (letter -> text)")
            if self.answer not in self.options:
                raise RecordError(f"answer {self.answer!r} is not one of the option letters {sorted(self.options)}")

    @property
    def kept(self) -> bool:
        return self.rejection is None

    def prompt_text(self) -> str:
        """The question as the model sees it (without image placeholders): options listed A., B., ..."""
        if not self.options:
            return self.question
        listed = "\n".join(f"{k}. {v}" for k, v in sorted(self.options.items()))
        return f"{self.question}\nOptions:\n{listed}"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["trajectory"] = self.trajectory.to_dict() if self.trajectory else None
        return d

    def to_json(self) -> str:
        return json_line(self.to_dict()).rstrip("\n")

    @classmethod
    def from_dict(cls, d: dict) -> "Sample":
        if not isinstance(d, dict):
            raise RecordError(f"expected a JSON object, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise RecordError(f"unknown field(s) {sorted(unknown)}")
        missing = [n for n in ("id", "source", "images", "question", "answer", "question_type") if n not in d]
        if missing:
            raise RecordError(f"missing field(s) {missing}")
        d = dict(d)
        try:
            d["rois"] = [RoI(**r) for r in d.get("rois") or []]
            d["provenance"] = [Provenance(**p) for p in d.get("provenance") or []]
            d["trajectory"] = Trajectory.from_dict(d["trajectory"]) if d.get("trajectory") else None
            if not isinstance(d.get("metadata") or {}, dict):
                raise TypeError("metadata must be an object")
        except (TypeError, AttributeError, ValueError) as err:  # a nested object of the wrong shape
            raise RecordError(str(err)) from None
        return cls(**d)

    @classmethod
    def from_json(cls, line: str) -> "Sample":
        try:
            return cls.from_dict(json.loads(line))
        except json.JSONDecodeError as err:
            raise RecordError(f"not valid JSON ({err.msg} at column {err.colno})") from None


def read_records(path: str | Path) -> Iterator[Sample]:
    """Yield the samples of a JSON-lines file; a bad line raises ``RecordError`` naming file and line."""
    path = Path(path)
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise RecordError(f"not UTF-8 (byte {err.start})", f"{path}:{lineno}") from None
            if not line.strip():
                continue
            try:
                yield Sample.from_json(line)
            except RecordError as err:
                raise RecordError(err.reason, f"{path}:{lineno}") from None


def write_records(path: str | Path, samples: list[Sample]) -> Path:
    """Write samples as JSON lines, atomically."""
    return atomic_write_jsonl(path, (s.to_dict() for s in samples))
