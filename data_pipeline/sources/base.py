"""What every source adapter yields, and how one source input becomes kept records or a rejection.

A source adapter (one file per source, registered in the entry-point group ``medsage.sources``) is a
class built as ``Adapter(root, image_dir, **options)`` with:

- ``name``: the source name written into every record;
- ``labels``: the source's own label set (distractors for multiple-choice questions come from it);
- ``modality``: default modality, when the source does not say per item;
- ``inputs()``: the ordered list of input keys (a CSV row, an image id, a JSON item) — every key
  ends as kept records or as one rejection with a reason, so counts reconcile;
- ``load(key)``: a ``SourceItem`` for that key, or raises ``InputRejected(reason)``;
- ``stamp(key)`` (optional): what the key's output depends on besides the run's settings (its raw
  annotation, the size and mtime of the files it reads), so a resumed run recomputes a shard whose
  inputs changed. An adapter without it is fingerprinted by its keys only.

Untrusted annotations: every path read from one goes through ``inside_root`` (it must resolve inside
the source root, symlinks followed), every number through ``finite``; a failure is a rejection.

``build_samples`` then runs the quality filter, asks the questions and normalises the RoIs. All
randomness is seeded from the item's key, so a shard computes the same bytes on every run.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
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


def inside_root(root: str | Path, relative: object, where: str, base: str | Path | None = None) -> Path:
    """``relative`` (a path from an annotation) resolved against ``base`` (default ``root``); it must stay
    inside ``root`` after symlinks, or the input is rejected as ``path-outside-root``."""
    if not isinstance(relative, str) or not relative.strip() or "\x00" in relative:
        raise InputRejected("bad-annotation", f"{where}: image path {relative!r} is not a path")
    top = Path(root).resolve()
    try:
        path = (Path(base).resolve() if base is not None else top).joinpath(relative).resolve()
    except (OSError, RuntimeError, ValueError) as err:  # a symlink loop, a name the OS refuses
        raise InputRejected("bad-annotation", f"{where}: image path {relative!r}: {err}") from None
    if not path.is_relative_to(top):
        raise InputRejected("path-outside-root", f"{where}: image path {relative!r} resolves to {path}, "
                                                 f"outside the source root {top}")
    return path


def inside_out(out_dir: str | Path, path: str | Path) -> Path:
    """A path about to be written, checked to resolve inside ``out_dir`` (a bug or a hostile name otherwise)."""
    top, target = Path(out_dir).resolve(), Path(path).resolve()
    if not target.is_relative_to(top):
        raise InputRejected("path-outside-output", f"would write {target}, outside the output folder {top}")
    return target


def finite(values, where: str) -> list[float]:
    """``values`` as floats, all finite (NaN passes every comparison and would become a full-image box)."""
    out = []
    for v in values:
        try:
            if isinstance(v, bool):
                raise TypeError
            number = float(v)
        except (TypeError, ValueError, OverflowError):
            raise InputRejected("bad-annotation", f"{where}: {v!r} is not a number") from None
        if not math.isfinite(number):
            raise InputRejected("bad-annotation", f"{where}: {v!r} is not a finite number")
        out.append(number)
    return out


def read_annotation_json(path: Path, what: str):
    """A source's annotation JSON, decoded strictly as UTF-8; any failure is a ValueError naming the file."""
    import json

    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 (byte {err.start}), cannot read {what}") from None
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read {what}: {err}") from None


def file_stamp(path: str | Path) -> list | None:
    """Size and mtime (ns) of a file, or None when it is missing: enough to notice a replaced file."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return [st.st_size, st.st_mtime_ns]


def input_stamp(adapter, key: str):
    """The adapter's ``stamp(key)``, or the key alone for an adapter that has none."""
    stamp = getattr(adapter, "stamp", None)
    return stamp(key) if stamp else key


def seeded_rng(*parts: object) -> random.Random:
    """A random generator seeded by the parts' text: the same item gets the same draws on any run."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def safe_id(text: str) -> str:
    """A record id fragment: path separators and spaces become '_'."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def build_samples(adapter: SourceAdapter, key: str, index: int, *, quality, questions, rois,
                  seed: int = 0, image_dir: str | Path | None = None) -> tuple[list[Sample], Rejection | None]:
    """Load one input, filter it, ask its question and normalise its RoIs.

    ``index`` is the input's position in ``adapter.inputs()``: question type and answer position
    cycle over it, so both are balanced across the source. ``quality``/``questions``/``rois`` are
    the ``QualityConfig`` / ``QuestionConfig`` / ``RoIConfig`` of the run. An image of more than 8 bits
    (a 12-bit X-ray in a 16-bit PNG) is replaced by an 8-bit copy under ``image_dir``, scaled by its
    own range, so training and evaluation see the picture and not a white square.
    """
    from medsage.data_pipeline.quality import check_item, drop_degenerate_boxes
    from medsage.data_pipeline.questions import ask
    from medsage.data_pipeline.rois import normalise_rois

    try:
        item = adapter.load(key)
    except InputRejected as err:
        return [], Rejection(adapter.name, key, err.reason, err.detail)
    try:
        if image_dir is not None:
            item.images = [eight_bit_copy(p, Path(image_dir) / adapter.name / "8bit", quality.max_pixels)
                           for p in item.images]
    except InputRejected as err:
        return [], Rejection(adapter.name, key, err.reason, err.detail, item.images)
    dropped = drop_degenerate_boxes(item, quality)
    reason, detail, size = check_item(item, quality)
    if reason:
        return [], Rejection(adapter.name, key, reason, detail, item.images)
    width, height = size
    from medsage.data_pipeline.short_qa import NoShortQA

    try:
        sample = ask(adapter, item, index, questions, size)
        sample.rois = normalise_rois(item.rois, width, height, rois, seeded_rng(seed, adapter.name, key, "rois"))
        sample.metadata = {**item.metadata, **sample.metadata, "image_size": [width, height], "input_key": key,
                           **({"dropped_rois": dropped} if dropped else {})}
    except NoShortQA as err:  # a caption that supports no short question: counted apart from broken input
        return [], Rejection(adapter.name, key, NoShortQA.reason, str(err), item.images)
    except (RecordError, ValueError) as err:
        return [], Rejection(adapter.name, key, "bad-annotation", str(err), item.images)
    return [sample], None


def eight_bit_copy(path: str, folder: Path, max_pixels: int) -> str:
    """``path`` itself, or for a wide image (16/32-bit) an 8-bit PNG copy in ``folder`` named by the
    source path's hash (the same source gives the same copy on every run); written atomically."""
    import io

    from PIL import Image

    from medsage.images import WIDE_MODES, ImageTooLarge, grey8, open_image
    from medsage.io import write_if_changed

    try:
        with open_image(path, max_pixels) as img:
            if img.mode not in WIDE_MODES:
                return path
            img.load()
            pixels = grey8(img)
    except ImageTooLarge as err:
        raise InputRejected("too-large", str(err)) from None
    except (OSError, ValueError, SyntaxError):
        return path  # the quality filter names what is wrong with it
    target = folder / f"{hashlib.sha256(path.encode()).hexdigest()[:16]}-{Path(path).stem}.png"
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    write_if_changed(target, buf.getvalue())
    return str(target.resolve())
