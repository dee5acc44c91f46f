"""Leak checks: the prompt rules (Figures 8-11) that code can check, applied to every synthesized stage.

- ``coordinates_in_loc``: the localization prose carries numbers that look like coordinates, a box,
  or pixel values (the structured ``box_2d`` region is added by the scaffold afterwards, not by the model);
- ``label_in_knowledge``: the knowledge stage names the label it was only meant to be guided by;
- ``answer_mismatch``: the final answer is not correct for the ground truth by the accuracy reward's
  rule (``medsage.answers.semantic_correct``).

Also here: what a record's label and reference answer are, since the checks are defined by them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from medsage.answers import decide_yes_no, match_answer, normalize, semantic_correct, semantic_match
from medsage.records import Sample

# Coordinate-like text in prose: "(12, 40", "[315, 742", "12,40,80", "x1=", "120 px", "box_2d", "bounding box".
_COORD_RE = re.compile(
    r"[\[(]\s*\d+(?:\.\d+)?\s*,\s*\d+"
    r"|\b\d+(?:\.\d+)?\s*,\s*\d+(?:\.\d+)?\s*,\s*\d+"
    r"|\b[xy][12]?\s*[=:]\s*\d"
    r"|\b\d+(?:\.\d+)?\s*(?:px|pixels?)\b"
    r"|box_2d|bounding\s+box|\bcoordinates?\b",
    re.IGNORECASE)
_GENERIC_LABELS = {"lesion", "region of interest", "full image", "anatomical location", "arrow reference"}


@dataclass(frozen=True)
class Leak:
    """One broken rule: a stable ``code`` (it is counted), the stage and what was found."""

    code: str
    stage: str
    detail: str

    def __str__(self) -> str:
        return f"{self.code} ({self.stage}): {self.detail}"


def reference_answer(sample: Sample) -> str:
    """The ground truth as the trajectory states it: ``Yes``, ``Liver`` (a choice by its option's text, as the
    paper's answers name the finding; the scorer resolves the text to its letter) or the open answer."""
    if sample.question_type == "choice":
        return sample.options[sample.answer]
    if sample.question_type == "closed":
        side, _ = decide_yes_no(sample.answer)
        return side.capitalize() if side else sample.answer
    return sample.answer


def finding_labels(sample: Sample) -> list[str]:
    """The label words the knowledge stage must not name: the answer's text and the annotated findings."""
    labels: list[str] = []
    if sample.question_type == "choice":
        labels.append(sample.options[sample.answer])
    elif sample.question_type == "open":
        labels.append(sample.answer)
    labels += [r.label for r in sample.rois if r.label and r.kind == "box" and r.origin == "annotation"]
    out = []
    for label in labels:
        norm = normalize(label)
        # yes/no and bare letters are no label; generic region names say nothing about the answer.
        if len(norm) >= 3 and norm not in _GENERIC_LABELS and decide_yes_no(norm)[0] is None and norm not in out:
            out.append(norm)
    return out


def guidance_label(sample: Sample) -> str:
    """The label that guides knowledge matching (Figure 10): the finding, else the reference answer."""
    labels = finding_labels(sample)
    return labels[0] if labels else reference_answer(sample)


def check_localization(prose: str) -> list[Leak]:
    if m := _COORD_RE.search(prose):
        return [Leak("coordinates_in_loc", "loc", f"coordinate-like text {m.group(0)!r}")]
    return []


def _names(text_words: list[str], label: str) -> bool:
    """Whether the label's words appear in order, allowing a plural on the last word."""
    lw = label.split()
    n = len(lw)
    for i in range(len(text_words) - n + 1):
        window = text_words[i:i + n]
        if window[:-1] == lw[:-1] and window[-1] in (lw[-1], lw[-1] + "s", lw[-1] + "es"):
            return True
    return False


def check_knowledge(text: str, labels: list[str]) -> list[Leak]:
    words = normalize(text).split()
    return [Leak("label_in_knowledge", "know", f"names the label {label!r}") for label in labels if _names(words, label)]


def check_answer(answer: str | None, sample: Sample) -> list[Leak]:
    """The final answer must be correct for y by the accuracy reward's own rule
    (``medsage.answers.semantic_correct``), so a kept trajectory is one the reward scores 1:
    "Findings are consistent with X" counts for X, "No X" does not."""
    if semantic_correct(answer, sample.answer, sample.question_type, sample.options):
        return []
    v = match_answer(answer, sample.answer, sample.question_type, sample.options)
    why = semantic_match(answer, sample.answer).reason if sample.question_type == "open" else v.reason
    return [Leak("answer_mismatch", "answer", why)]


def check_stages(loc_prose: str, know: str, answer: str | None, sample: Sample) -> list[Leak]:
    """Every checkable rule for one trajectory, in stage order."""
    return [*check_localization(loc_prose), *check_knowledge(know, finding_labels(sample)),
            *check_answer(answer, sample)]
