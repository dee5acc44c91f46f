"""The semantic open-answer check (paper A.4: "semantically consistent with the reference or within an
acceptable range"). Evaluation keeps exact match as its headline and reports this beside it; the
accuracy reward and the synthesis leak check use it, so all three agree on "correct". Part of
``medsage.answers`` (import it from there).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from medsage.answers import QuestionType, decide_yes_no, match_answer, normalize

# Words that carry no finding: "Findings are most consistent with X" says X.
_CARRIER = {"findings", "finding", "are", "is", "was", "were", "be", "most", "consistent", "with", "compatible",
            "suggestive", "suggest", "suggests", "likely", "probably", "possibly", "image", "images", "shows",
            "show", "shown", "demonstrates", "seen", "visible", "this", "these", "there", "of", "in", "on", "at",
            "and", "or", "to", "it", "its", "which", "that", "as", "by", "for", "from", "answer", "appears",
            "represents", "evidence", "diagnosis", "features", "picture", "scan", "study", "about",
            "approximately", "around", "roughly", "nearly", "measuring", "measures", "size"}
_NEGATION_CUES = {"no", "not", "without", "absent", "negative", "non", "none", "nor", "neither", "free", "lack",
                  "lacks", "excluded", "isn't", "aren't", "wasn't", "weren't"}
_HEDGE_RE = re.compile(r"\b(?:or|versus|vs|either)\b")
_CLAUSE_RE = re.compile(r"[.;:,!?()\[\]]|\bbut\b|\bhowever\b")
_NUMBER_RE = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?![\w.]*[a-z]\d)")
# Synonym groups: every phrase maps to the group's first entry (phrases matched on whole words).
DEFAULT_SYNONYMS: tuple[tuple[str, ...], ...] = (
    ("ct", "computed tomography", "ct scan", "cat scan", "computerized tomography"),
    ("mri", "magnetic resonance imaging", "magnetic resonance", "mr imaging", "mr"),
    ("xray", "x ray", "radiograph", "radiography", "plain film", "plain radiograph", "roentgenogram"),
    ("ultrasound", "ultrasonography", "sonography", "sonogram", "us"),
    ("pet", "positron emission tomography"),
    ("kidney", "renal"), ("liver", "hepatic"), ("lung", "pulmonary"), ("heart", "cardiac"), ("brain", "cerebral"),
    ("chest", "thorax", "thoracic"), ("abdomen", "abdominal"), ("pelvis", "pelvic"), ("spine", "spinal", "vertebral"),
    ("tumor", "tumour", "neoplasm"), ("left", "lt"), ("right", "rt"), ("both", "bilateral"),
    ("hemorrhage", "haemorrhage", "bleed", "bleeding"), ("edema", "oedema"),
)


@dataclass(frozen=True)
class SemanticRule:
    """How an open answer is judged semantically (a recipe can set every field).

    ``metric``/``threshold``: token recall of the reference (or F1) over finding words, after
    synonyms are unified, plurals folded, acronyms of the words before them and carrier words
    ("findings are consistent with") dropped; a negated word ("no pneumothorax") is a different
    token from the plain one, so polarity must agree. Every number of the reference must appear in
    the answer within ``rel_tol`` (relative) or ``abs_tol``. An answer that hedges between
    alternatives ("X or Y") is not correct unless the reference does too: recall cannot be bought
    by listing every candidate.
    """

    metric: Literal["f1", "recall"] = "recall"
    threshold: float = 0.75
    rel_tol: float = 0.05
    abs_tol: float = 0.0
    synonyms: tuple[tuple[str, ...], ...] = DEFAULT_SYNONYMS
    extra_synonyms: tuple[tuple[str, ...], ...] = ()  # added to ``synonyms`` (a lab's own vocabulary)

    def __post_init__(self) -> None:
        if self.metric not in ("f1", "recall"):
            raise ValueError(f"semantic metric must be f1 or recall, got {self.metric!r}")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"semantic threshold must be in (0, 1], got {self.threshold}")


DEFAULT_RULE = SemanticRule()


@dataclass(frozen=True)
class SemanticVerdict:
    correct: bool
    score: float  # the metric's value (0 when a number or the polarity disagrees)
    reason: str


def _canon_phrases(text: str, rule: SemanticRule) -> str:
    padded = f" {text} "
    groups = (*rule.synonyms, *rule.extra_synonyms)
    phrases = sorted(((normalize(p), normalize(g[0])) for g in groups for p in g[1:]), key=lambda x: -len(x[0]))
    for phrase, canon in phrases:
        if phrase and f" {phrase} " in padded:
            padded = padded.replace(f" {phrase} ", f" {canon.replace(' ', '_')} ")
    return padded.strip()


def _fold(word: str) -> str:
    if len(word) > 3 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def _is_acronym(word: str, previous: list[str]) -> bool:
    """``word`` (2-5 letters) abbreviates the last two or more words: it starts their first word and
    its letters run through them in order."""
    if not 2 <= len(word) <= 5 or not word.isalpha():
        return False
    for k in range(2, len(previous) + 1):
        source = previous[-k:]
        if source[0][0] == word[0] and all(w[0] in word for w in source):
            letters = iter("".join(source))
            if all(c in letters for c in word):
                return True
    return False


def semantic_tokens(text: str, rule: SemanticRule = DEFAULT_RULE) -> tuple[list[str], list[float]]:
    """Finding tokens (negated ones prefixed ``not_``) and the numbers of a text."""
    lowered = text.lower()
    numbers = [float(n) for n in _NUMBER_RE.findall(lowered)]
    tokens: list[str] = []
    for clause in _CLAUSE_RE.split(_NUMBER_RE.sub(" ", lowered)):
        negated = False
        for w in _canon_phrases(normalize(clause), rule).split():
            if w in _NEGATION_CUES:
                negated = True
                continue
            if w in _CARRIER:
                continue
            word = _fold(w)
            if _is_acronym(word, [t.removeprefix("not_") for t in tokens[-4:]]):
                continue  # "choroidal neovascularization (CNV)": the acronym repeats its words
            tokens.append(("not_" if negated else "") + word)
    return tokens, numbers


def semantic_match(predicted: str | None, reference: str, rule: SemanticRule = DEFAULT_RULE) -> SemanticVerdict:
    """Whether an open answer says what the reference says (see ``SemanticRule``)."""
    if not predicted or not predicted.strip():
        return SemanticVerdict(False, 0.0, "no answer")
    if _HEDGE_RE.search(predicted.lower()) and not _HEDGE_RE.search(reference.lower()):
        return SemanticVerdict(False, 0.0, "hedges between alternatives")
    ref_tokens, ref_numbers = semantic_tokens(reference, rule)
    pred_tokens, pred_numbers = semantic_tokens(predicted, rule)
    for n in ref_numbers:
        if not any(abs(p - n) <= max(rule.abs_tol, rule.rel_tol * abs(n)) for p in pred_numbers):
            return SemanticVerdict(False, 0.0, f"number {n:g} of the reference is not in the answer")
    if not ref_tokens:  # a purely numeric reference: the numbers decided
        ok = bool(ref_numbers)
        return SemanticVerdict(ok, float(ok), "numbers agree" if ok else "reference has no finding words")
    ref_set, pred_set = set(ref_tokens), set(pred_tokens)
    common = len(ref_set & pred_set)
    recall = common / len(ref_set)
    precision = common / len(pred_set) if pred_set else 0.0
    score = recall if rule.metric == "recall" else (2 * precision * recall / (precision + recall) if common else 0.0)
    flipped = sorted(t for t in ref_set if (t[4:] if t.startswith("not_") else "not_" + t) in pred_set)
    if flipped:
        return SemanticVerdict(False, 0.0, f"polarity differs on {flipped[0].removeprefix('not_')!r}")
    ok = score >= rule.threshold
    return SemanticVerdict(ok, score, f"token {rule.metric} {score:.2f} {'>=' if ok else '<'} {rule.threshold}")


def semantic_correct(predicted: str | None, answer: str, question_type: QuestionType,
                     options: dict[str, str] | None = None, rule: SemanticRule = DEFAULT_RULE) -> bool:
    """The accuracy reward's and the leak check's "correct": the verdict of ``match_answer``, and for
    open answers (and closed items whose reference is not yes/no) the semantic check as well."""
    if match_answer(predicted, answer, question_type, options).correct:
        return True
    return judged_as_open(answer, question_type) and semantic_match(predicted, answer, rule).correct


def judged_as_open(answer: str, question_type: QuestionType) -> bool:
    """Open items, and closed items whose reference is not yes/no (``match_answer`` judges them as open)."""
    return question_type == "open" or (question_type == "closed" and decide_yes_no(answer)[0] is None)
