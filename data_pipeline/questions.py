"""Questions from labels, as the paper builds its initial pool (Appendix A.1): closed, choice, open;
and from boxes (any box source): presence, quadrant, count.

Per input one question; the kind cycles over ``QuestionConfig.types`` by the input's position, so
kinds are balanced across a source. A kind that does not apply to an item (a label kind on an image
without labels, ``quadrant`` without exactly one box) gives way to the next kind in ``types`` that
does, so the choice is deterministic. Box kinds: ``presence`` ("Is there a {subject} in this
image?", yes iff any box), ``quadrant`` (A-D in a fixed order, from the one box's centre) and
``count`` (A. 0 .. D. 3, capped). Every record keeps its kind in ``metadata["question_kind"]``. Closed questions alternate between the true label (yes) and a
label absent from the image (no); multiple-choice distractors come from the source's own label set
and the answer's position cycles over the option letters, so no letter is favoured. A source that
brings its own question and a free-text answer (PubMedVision) gets a short, checkable question derived
from that text (``medsage.data_pipeline.short_qa``), the caption kept as context; with
``from_text: false`` its own question is kept as an open question.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from medsage.data_pipeline.short_qa import RULES, derive, is_caption
from medsage.data_pipeline.sources.base import SourceAdapter, SourceItem, safe_id, seeded_rng
from medsage.records import Sample
from medsage.vocab import QUESTION_TYPES

LETTERS = "ABCDEFGH"
BOX_KINDS = ("presence", "quadrant", "count")
QUESTION_KINDS = (*QUESTION_TYPES, *BOX_KINDS)
QUADRANTS = ("upper left", "upper right", "lower left", "lower right")  # options A-D of a quadrant question
COUNTS = ("0", "1", "2", "3")  # options A-D of a count question; more boxes count as 3
BOX_WORDING = {"presence": "Is there a {subject} in this image?",
               "quadrant": "Which quadrant of the image holds the {subject}?",
               "count": "How many {subject}s are visible?"}
DEFAULT_CLOSED = "Is there evidence of {label} in this image?"
DEFAULT_WHICH = "Which finding is present in this image?"


@dataclass
class QuestionConfig:
    """How questions are asked from labels."""

    types: list[str] = field(default_factory=lambda: ["closed", "choice", "open"])  # kinds, cycled per input
    subject: str = "lesion"  # what the box kinds ask about ("Is there a {subject} in this image?")
    n_options: int = 4  # options of a choice question (fewer when the label set is smaller)
    # Wording with {label} filled in; None = the source's own ``templates`` (or the defaults below).
    closed: str | None = None
    which: str | None = None
    # A source's own free-text answer becomes one short question by these rules (short_qa.RULES); [] keeps
    # the source's question and paragraph answer as they are.
    from_text: list[str] = field(default_factory=lambda: list(RULES))

    def __post_init__(self) -> None:
        bad = [t for t in self.types if t not in QUESTION_KINDS]
        if bad or not self.types:
            raise ValueError(f"question types must be a non-empty list of {'/'.join(QUESTION_KINDS)}, got {self.types}")
        if not 2 <= self.n_options <= len(LETTERS):
            raise ValueError(f"n_options must be 2..{len(LETTERS)}, got {self.n_options}")


def quadrant_of(box, width: float, height: float) -> int:
    """Index into QUADRANTS of the quadrant holding the centre of ``box`` (x1, y1, x2, y2)."""
    x1, y1, x2, y2 = box
    return int((x1 + x2) / 2 >= width / 2) + 2 * int((y1 + y2) / 2 >= height / 2)


def ask(adapter: SourceAdapter, item: SourceItem, index: int, cfg: QuestionConfig,
        size: tuple[int, int] | None = None) -> Sample:
    """The record for one item: its question, answer, options and question type. ``size`` (width, height)
    of its first image places a box in its quadrant; None reads it from the file."""
    sample_id = f"{adapter.name}-{safe_id(item.key)}"
    common = dict(id=sample_id, source=adapter.name, images=item.images, modality=item.modality or adapter.modality)
    if item.question is not None and cfg.from_text and is_caption(item.question_type, item.answer):
        # A caption: one short question it supports.
        return _from_text(item, index, cfg, common, seeded_rng(adapter.name, item.key, "short_qa"))
    if item.question is not None:  # the source's own question and answer
        return Sample(question=item.question, answer=item.answer or "", question_type=item.question_type,
                      metadata={"question_kind": item.question_type}, **common)

    boxes = [roi.box for roi in item.rois if roi.kind == "box"]
    choosable = any(label not in item.labels for label in adapter.labels)
    kind = _kind(cfg.types, index, bool(item.labels), choosable, len(boxes))
    sample = _ask_kind(kind, adapter, item, index, cfg, boxes, size, common)
    sample.metadata = {**sample.metadata, "question_kind": kind}
    return sample


def _kind(types: list[str], index: int, labelled: bool, choosable: bool, n_boxes: int) -> str:
    """``types[index]``, or the first kind after it (cyclically) that applies to the item."""
    for step in range(len(types)):
        kind = types[(index + step) % len(types)]
        if (kind in QUESTION_TYPES and not labelled) or (kind == "quadrant" and n_boxes != 1):
            continue
        return "closed" if kind == "choice" and not choosable else kind  # a label set of one: nothing to choose
    raise ValueError(f"item has no label to ask about and none of the kinds {types} applies to it")


def _ask_kind(kind: str, adapter: SourceAdapter, item: SourceItem, index: int, cfg: QuestionConfig,
              boxes: list, size: tuple[int, int] | None, common: dict) -> Sample:
    if kind == "presence":
        return Sample(question=BOX_WORDING[kind].format(subject=cfg.subject), answer="yes" if boxes else "no",
                      question_type="closed", **common)
    if kind in ("quadrant", "count"):
        if kind == "quadrant":
            answer = quadrant_of(boxes[0], *(size or _image_size(item.images[0])))
            texts = QUADRANTS
        else:
            answer, texts = min(len(boxes), len(COUNTS) - 1), COUNTS
        return Sample(question=BOX_WORDING[kind].format(subject=cfg.subject), answer=LETTERS[answer],
                      question_type="choice", options={LETTERS[i]: t for i, t in enumerate(texts)}, **common)

    templates = getattr(adapter, "templates", {}) or {}
    closed_t = cfg.closed or templates.get("closed", DEFAULT_CLOSED)
    which_t = cfg.which or templates.get("which", DEFAULT_WHICH)
    present = list(dict.fromkeys(item.labels))
    absent = [label for label in adapter.labels if label not in present]
    rng = seeded_rng(adapter.name, item.key, "question")
    label = present[0] if len(present) == 1 else rng.choice(present)

    if kind == "closed":
        ask_true = (index // len(cfg.types)) % 2 == 0 or not absent  # yes/no balanced across the source
        asked = label if ask_true else rng.choice(absent)
        return Sample(question=closed_t.format(label=asked), answer="yes" if ask_true else "no",
                      question_type="closed", **common)
    if kind == "choice":
        n = min(cfg.n_options, len(absent) + 1)
        distractors = rng.sample(absent, n - 1)
        position = (index // len(cfg.types)) % n  # answer letter cycles A, B, C, D, A, ...
        ordered = distractors[:position] + [label] + distractors[position:]
        options = {LETTERS[i]: text for i, text in enumerate(ordered)}
        return Sample(question=which_t.format(label=label), answer=LETTERS[position], question_type="choice",
                      options=options, **common)
    return Sample(question=which_t.format(label=label), answer=label, question_type="open", **common)


def _image_size(path: str) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as img:
        return img.size


def _from_text(item: SourceItem, index: int, cfg: QuestionConfig, common: dict, rng) -> Sample:
    """The short question derived from the item's own text; the original question and caption stay as context."""
    fields = {"modality": item.modality, "body_part": item.metadata.get("body_part")}
    derived = derive(f"{item.question}\n{item.answer or ''}", fields, index, rng, tuple(cfg.from_text))
    sample = Sample(question=derived.question, answer=derived.answer, question_type=derived.question_type,
                    options=derived.options, **common)
    sample.metadata = {"question_kind": derived.rule, "context": {"question": item.question, "caption": item.answer},
                       "short_qa": {"rule": derived.rule, "evidence": derived.evidence}}
    return sample
