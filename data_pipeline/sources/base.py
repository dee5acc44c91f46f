"""What every source adapter yields, and how one source input becomes kept records or a rejection.

A source adapter (one file per source, registered in the entry-point group ``medsage.sources``) is a
class built as ``Adapter(root, image_dir, **options)`` with:

- ``name``: the source name written into every record;
- ``labels``: the source's own label set (distractors for multiple-choice questions come from it);
- ``modality``: default modality, when the source does not say per item;
- ``inputs()``: the ordered list of input keys (a CSV row, an image id, a JSON item) — every key
  ends as kept records or as one rejection with a reason, so counts reconcile;
- ``load(key)``: a ``SourceItem`` for that key, or raises ``InputRejected(reason)``.

``build_samples`` then runs the quality filter, asks the questions and normalises the RoIs. All
randomness is seeded from the item's key, so a shard computes the same bytes on every run.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Protocol

from medsage.records import RecordError, RoI, Sample


class InputRejected(Exception):
    """An input that cannot become a record; ``reason`` is short and stable (it is counted)."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason, self.detail = reason, detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


@dataclass
class SourceItem:
    """One source input read and understood, before questions and RoI normalisation.

    ``labels`` are the labels present in the image (what closed/choice questions are about);
    ``rois`` are the annotated regions (pixel boxes or text cues). A source with its own question
    (PubMedVision) sets ``question``/``answer`` and they are kept as an open question.
    """

    key: str
    images: list[str]
    labels: list[str] = field(default_factory=list)
    rois: list[RoI] = field(default_factory=list)
    modality: str | None = None
    question: str | None = None
    answer: str | None = None
    question_type: str = "open"  # of the source's own question
    metadata: dict = field(default_factory=dict)


@dataclass
class Rejection:
    """A source input that ended rejected, with the reason on disk."""

    source: str
    key: str
    reason: str
    detail: str = ""
    images: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"source": self.source, "key": self.key, "reason": self.reason, "detail": self.detail,
                "images": self.images}


class SourceAdapter(Protocol):
    name: str
    labels: list[str]
    modality: str | None

    def inputs(self) -> list[str]: ...

    def load(self, key: str) -> SourceItem: ...


def seeded_rng(*parts: object) -> random.Random:
    """A random generator seeded by the parts' text: the same item gets the same draws on any run."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def safe_id(text: str) -> str:
    """A record id fragment: path separators and spaces become '_'."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def build_samples(adapter: SourceAdapter, key: str, index: int, *, quality, questions, rois,
                  seed: int = 0) -> tuple[list[Sample], Rejection | None]:
    """Load one input, filter it, ask its question and normalise its RoIs.

    ``index`` is the input's position in ``adapter.inputs()``: question type and answer position
    cycle over it, so both are balanced across the source. ``quality``/``questions``/``rois`` are
    the ``QualityConfig`` / ``QuestionConfig`` / ``RoIConfig`` of the run.
    """
    from medsage.data_pipeline.quality import check_item
    from medsage.data_pipeline.questions import ask
    from medsage.data_pipeline.rois import normalise_rois

    try:
        item = adapter.load(key)
    except InputRejected as err:
        return [], Rejection(adapter.name, key, err.reason, err.detail)
    reason, detail, size = check_item(item, quality)
    if reason:
        return [], Rejection(adapter.name, key, reason, detail, item.images)
    width, height = size
    from medsage.data_pipeline.short_qa import NoShortQA

    try:
        sample = ask(adapter, item, index, questions)
        sample.rois = normalise_rois(item.rois, width, height, rois, seeded_rng(seed, adapter.name, key, "rois"))
        sample.metadata = {**item.metadata, **sample.metadata, "image_size": [width, height], "input_key": key}
    except NoShortQA as err:  # a caption that supports no short question: counted apart from broken input
        return [], Rejection(adapter.name, key, NoShortQA.reason, str(err), item.images)
    except (RecordError, ValueError) as err:
        return [], Rejection(adapter.name, key, "bad-annotation", str(err), item.images)
    return [sample], None
