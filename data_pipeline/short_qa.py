"""Short, checkable questions from a source's free text (PubMedVision's captions are whole paragraphs).

An open question whose reference answer is a paragraph can never be answered "correctly", so a record
asks one short question the text (or the item's own fields) supports, and keeps the caption as context
(``metadata["context"]``). The rules, each ``rule(text, fields) -> Derived | None``:

- ``modality``: the item's modality field, else a modality named in the text -> choice among modalities;
- ``body_part``: the item's body-part field, else a region named in the text -> open, one or two words;
- ``laterality``: the text names exactly one side (left or right, never both, never "bilateral")
  -> choice Left / Right;
- ``finding``: a finding of the vocabulary named in the text -> closed yes, or no when the text
  negates it ("no pleural effusion", "without fracture").

Only an open answer longer than ``SHORT_ANSWER_WORDS`` words is a caption; a source's closed, choice or
short answer stays as it is. One record per input (so an input stays one kept record or one rejection): the rules are tried in an
order rotated by the input's position, so each rule serves its share of the source; an item no rule
supports is rejected as ``no-short-qa``. ``metadata["short_qa"]`` names the rule that asked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

RULES = ("modality", "body_part", "laterality", "finding")
# A source's own answer this short (or a closed or choice question) is already checkable: kept as it is.
SHORT_ANSWER_WORDS = 3

# Canonical modality -> how fields and captions name it.
MODALITIES: dict[str, tuple[str, ...]] = {
    "CT": ("computed tomography", "ct scan", "ct", "cta", "hrct"),
    "MRI": ("magnetic resonance", "mri", "mr imaging", "t1-weighted", "t2-weighted", "flair"),
    "X-ray": ("x-ray", "xray", "radiograph", "radiography", "plain film"),
    "Ultrasound": ("ultrasound", "ultrasonography", "sonography", "sonogram", "doppler"),
    "Microscopy": ("microscopy", "histology", "histopathology", "micrograph", "h&e", "immunohistochemistry"),
    "Endoscopy": ("endoscopy", "endoscopic", "colonoscopy", "gastroscopy"),
    "PET": ("pet", "positron emission"),
    "Fundus photography": ("fundus", "retinal photograph"),
    "Dermoscopy": ("dermoscopy", "dermatoscopy"),
    "Angiography": ("angiography", "angiogram"),
}
BODY_PARTS: dict[str, tuple[str, ...]] = {
    "brain": ("brain", "cerebral", "intracranial", "cerebellum", "cerebellar"),
    "head and neck": ("head and neck", "head", "skull", "neck", "thyroid", "parotid", "sinus", "orbit"),
    "chest": ("chest", "thorax", "thoracic", "lung", "lungs", "pulmonary", "mediastinum", "pleural"),
    "heart": ("heart", "cardiac", "coronary", "ventricle", "atrium"),
    "abdomen": ("abdomen", "abdominal", "liver", "hepatic", "spleen", "pancreas", "bowel", "kidney", "renal"),
    "pelvis": ("pelvis", "pelvic", "bladder", "uterus", "ovary", "prostate"),
    "spine": ("spine", "spinal", "vertebra", "vertebral", "lumbar", "cervical spine"),
    "upper limb": ("shoulder", "humerus", "elbow", "forearm", "wrist", "hand"),
    "lower limb": ("hip", "femur", "knee", "tibia", "ankle", "foot", "lower limb", "leg"),
    "breast": ("breast", "mammogram", "mammography"),
    "skin": ("skin", "cutaneous"),
    "eye": ("eye", "retina", "retinal", "ocular"),
}
FINDINGS = ("mass", "nodule", "cyst", "fracture", "pleural effusion", "effusion", "pneumothorax", "consolidation",
            "haemorrhage", "hemorrhage", "calcification", "stenosis", "aneurysm", "tumour", "tumor", "metastasis",
            "oedema", "edema", "abscess", "infarct", "atelectasis", "cardiomegaly", "lymphadenopathy", "hernia",
            "dilatation", "thickening", "opacity", "lesion", "focal abnormality")
# A negation cue before a finding in the same clause: "no", "without", "absence of", "negative for", "free of".
_NEGATION_RE = re.compile(r"\b(?:no|not|without|absence of|absent|negative for|free of|rule[sd]? out)\b")
_CLAUSE_RE = re.compile(r"[.;:!?]|\bbut\b|\bhowever\b")
_SIDE_RE = re.compile(r"\b(left|right|bilateral(?:ly)?|both)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Derived:
    """One short question: its text, reference answer, type and options (choice only)."""

    rule: str
    question: str
    answer: str
    question_type: str
    options: dict[str, str] | None = None
    evidence: str = ""  # what in the text or fields supports it


class NoShortQA(ValueError):
    """The text supports none of the rules: the input is rejected as ``no-short-qa``."""

    reason = "no-short-qa"


def _has(text: str, phrase: str) -> bool:
    return re.search(rf"(?<![a-z0-9]){re.escape(phrase)}(?![a-z0-9])", text) is not None


def _canonical(value: str | None, table: dict[str, tuple[str, ...]], text: str) -> tuple[str, str] | None:
    """(canonical name, evidence): from the field when it names one, else the first the text names."""
    for source, where in ((value or "", "field"), (text, "text")):
        low = source.lower()
        hits = [(m.start(), name) for name, words in table.items() for w in words
                if (m := re.search(rf"(?<![a-z0-9]){re.escape(w)}(?![a-z0-9])", low))]
        if hits:
            return min(hits)[1], where
    return None


def _choice(correct: str, pool: list[str], rng, n: int = 4) -> tuple[dict[str, str], str]:
    others = rng.sample([p for p in pool if p != correct], min(n - 1, len(pool) - 1))
    position = rng.randrange(len(others) + 1)
    ordered = others[:position] + [correct] + others[position:]
    letters = "ABCDEFGH"
    return {letters[i]: t for i, t in enumerate(ordered)}, letters[position]


def modality(text: str, fields: dict, rng) -> Derived | None:
    found = _canonical(fields.get("modality"), MODALITIES, text)
    if found is None:
        return None
    name, where = found
    options, answer = _choice(name, list(MODALITIES), rng)
    return Derived("modality", "Which imaging modality was used to acquire this image?", answer, "choice", options,
                   f"{where}: {fields.get('modality') if where == 'field' else name}")


def body_part(text: str, fields: dict, rng) -> Derived | None:
    found = _canonical(fields.get("body_part"), BODY_PARTS, text)
    if found is None:
        return None
    name, where = found
    return Derived("body_part", "Which body region is shown in this image? Answer in one or two words.", name,
                   "open", None, f"{where}: {fields.get('body_part') if where == 'field' else name}")


def laterality(text: str, fields: dict, rng) -> Derived | None:
    sides = {m.group(1).lower() for m in _SIDE_RE.finditer(text)}
    if len(sides) != 1 or sides & {"bilateral", "bilaterally", "both"}:
        return None
    side = sides.pop()
    options, answer = ({"A": "Left", "B": "Right"}, "A" if side == "left" else "B")
    if rng.random() < 0.5:  # the letter of the answer is not always the same
        options, answer = {"A": "Right", "B": "Left"}, "B" if side == "left" else "A"
    return Derived("laterality", "On which side of the patient is the described abnormality?", answer, "choice",
                   options, f"text names only the {side} side")


def finding(text: str, fields: dict, rng) -> Derived | None:
    low = text.lower()
    hits = [(m.start(), f) for f in FINDINGS if (m := re.search(rf"(?<![a-z0-9]){re.escape(f)}(?:e?s)?(?![a-z0-9])", low))]
    if not hits:
        return None
    start, name = min(hits, key=lambda h: (h[0], -len(h[1])))
    clause = _CLAUSE_RE.split(low[:start])[-1]
    negated = _NEGATION_RE.search(clause) is not None
    article = "an" if name[0] in "aeiou" else "a"
    question = f"Is there {article} {name} in this image?"
    return Derived("finding", question, "no" if negated else "yes", "closed", None,
                   f"text {'negates' if negated else 'names'} '{name}'")


RULE_FUNCS: dict[str, Callable[[str, dict, object], Derived | None]] = {
    "modality": modality, "body_part": body_part, "laterality": laterality, "finding": finding}


def is_caption(question_type: str, answer: str | None) -> bool:
    """Whether a source's own answer is a paragraph to derive from, rather than an answer to keep."""
    return question_type == "open" and len((answer or "").split()) > SHORT_ANSWER_WORDS


def derive(text: str, fields: dict, index: int, rng, rules: tuple[str, ...] = RULES) -> Derived:
    """The short question for one input: the first rule (in an order rotated by ``index``) the text supports."""
    if bad := [r for r in rules if r not in RULE_FUNCS]:
        raise ValueError(f"unknown short-QA rule(s) {bad}; known: {list(RULE_FUNCS)}")
    order = [rules[(index + i) % len(rules)] for i in range(len(rules))]
    for name in order:
        if (found := RULE_FUNCS[name](text, fields, rng)) is not None:
            return found
    raise NoShortQA(f"the text supports none of the rules {list(rules)}")
