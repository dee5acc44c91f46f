"""Answer extraction and matching: the one module that both evaluation and the accuracy reward use.

Rules, so a score can be explained item by item:
- extraction: ``<ANSWER>`` through the scaffold's lenient parser; fallbacks, in order, are the last
  ``Answer: ...`` line and then the whole text when it is short (<= 8 words). Each says which it used.
- closed (yes/no): decided on whole words, never substrings ("not", "normal", "know", "nothing" are
  not "no"); a negated yes-word counts as no ("not present") and a negated no-word as yes ("not
  absent"); a text with both yes and no words, or neither, is unparseable.
- choice: a standalone option letter (``B``, ``(B)``, ``B.``, ``option B``) or the full text of an
  option; naming two different options is wrong, never "first one wins".
- open: normalised exact match (headline) and token recall of the reference (reported beside it).
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Literal

from medsage.scaffold import parse_lenient, strip_emphasis
from medsage.vocab import QuestionType

_YES = {"yes", "yeah", "yep", "true", "present", "positive", "correct"}
_NO = {"no", "nope", "false", "absent", "negative", "incorrect"}
_ARTICLES = {"a", "an", "the"}
_WORD_RE = re.compile(r"[a-z0-9]+(?:[.'\-][a-z0-9]+)*")
_ANSWER_LINE_RE = re.compile(r"^[ \t*_#]*(?:the\s+)?(?:final\s+)?answer(?:\s+is)?[*_]*\s*[:\-][*_]*[ \t]*(\S.*?)[ \t]*$",
                             re.IGNORECASE | re.MULTILINE)
_NEGATORS = {"not", "isn't", "aren't", "wasn't", "weren't", "non"}
_NOT_AN_ANSWER = {"idea", "clue"}
_PUNCT = str.maketrans({c: " " for c in string.punctuation})


@dataclass(frozen=True)
class Extraction:
    answer: str | None
    how: Literal["answer_tag", "answer_line", "short_text", "none"]


@dataclass(frozen=True)
class AnswerMatch:
    """Whether a prediction is right, why, and the open-answer scores."""

    correct: bool
    reason: str
    extracted: str | None
    parsed: bool  # False when no answer could be read at all (counted and shown separately)
    exact: bool = False
    recall: float = 0.0


def normalize(text: str) -> str:
    """Lower case, punctuation to spaces, articles dropped, whitespace collapsed."""
    words = text.lower().translate(_PUNCT).split()
    return " ".join(w for w in words if w not in _ARTICLES)


def words(text: str) -> list[str]:
    return _WORD_RE.findall(text.lower())


def extract_answer(output: str) -> Extraction:
    """The answer a model gave, and how it was found (see module docstring for the order)."""
    traj = parse_lenient(output or "")
    if traj.answer:
        return Extraction(traj.answer, "answer_tag")
    # The last "Answer: ..." line wins: models restate a draft answer before the final one.
    for found in reversed(_ANSWER_LINE_RE.findall(output or "")):
        if line := strip_emphasis(found):
            return Extraction(line, "answer_line")
    text = strip_emphasis(output or "")
    if text and "<" not in text and len(text.split()) <= 8:
        return Extraction(text, "short_text")
    return Extraction(None, "none")


def decide_yes_no(text: str) -> tuple[Literal["yes", "no"] | None, str]:
    """``yes`` / ``no`` from whole words, or None with the reason; a negator flips the next word."""
    found: dict[str, list[str]] = {"yes": [], "no": []}
    ws = words(text)
    for i, w in enumerate(ws):
        side = "yes" if w in _YES else "no" if w in _NO else None
        if side is None:
            continue
        if w == "no" and i + 1 < len(ws) and ws[i + 1] in _NOT_AN_ANSWER:  # "no idea" says nothing
            continue
        if i and ws[i - 1] in _NEGATORS:
            side = "no" if side == "yes" else "yes"
            w = f"{ws[i - 1]} {w}"
        found[side].append(w)
    if found["yes"] and found["no"]:
        return None, f"says both yes ({found['yes'][0]!r}) and no ({found['no'][0]!r})"
    if found["yes"]:
        return "yes", f"yes-word {found['yes'][0]!r}"
    if found["no"]:
        return "no", f"no-word {found['no'][0]!r}"
    return None, "no yes/no word"


# A standalone capital letter ("B", "(B)", "B.", "option B", "A or C"). "A" followed by a lower-case
# word is the article ("A bright focus"), unless that word joins options ("A or B") or is a verb
# about the option ("A is correct").
_LETTER_RE = re.compile(r"(?<![A-Za-z0-9])([A-Z])(?![A-Za-z0-9'])")
_ARTICLE_RE = re.compile(r"A\s+(?!(?:or|and|is|was|would|seems|appears|fits|matches)\b)[a-z]")


def match_choice(text: str, options: dict[str, str]) -> tuple[str | None, str]:
    """The option letter a text names, or None with the reason (none named, or several)."""
    letters = {k.strip().upper(): v for k, v in options.items()}
    s = text.strip()
    named = {m.group(1) for m in _LETTER_RE.finditer(s)
             if m.group(1) in letters and not (m.group(1) == "A" and _ARTICLE_RE.match(s, m.start()))}
    norm = f" {normalize(s)} "
    by_text = {k for k, v in letters.items() if normalize(v) and f" {normalize(v)} " in norm}
    # An option text that is contained in a longer named option ("lung" in "lung nodule") is not a second pick.
    by_text = {k for k in by_text if not any(k != o and normalize(letters[k]) in normalize(letters[o]) for o in by_text)}
    if named and by_text and not by_text <= named:
        named |= by_text
    elif not named:
        named = by_text
    if len(named) > 1:
        return None, f"names several options {sorted(named)}"
    if not named:
        return None, "names no option"
    (letter,) = named
    return letter, f"names option {letter}"


def match_answer(predicted: str | None, answer: str, question_type: QuestionType,
                 options: dict[str, str] | None = None) -> AnswerMatch:
    """Judge an extracted answer against the ground truth for one question type."""
    if predicted is None or not predicted.strip():
        return AnswerMatch(False, "no answer could be extracted", None, parsed=False)
    if question_type == "closed":
        gold, _ = decide_yes_no(answer)
        if gold is None:  # a "closed" item whose reference is not yes/no is judged as open text
            return match_answer(predicted, answer, "open")
        said, why = decide_yes_no(predicted)
        if said is None:
            return AnswerMatch(False, f"unparseable yes/no: {why}", predicted, parsed=False)
        ok = said == gold
        return AnswerMatch(ok, f"{why}; reference is {gold!r}", predicted, parsed=True, exact=ok, recall=float(ok))
    if question_type == "choice":
        if not options:
            raise ValueError("a choice question needs its options")
        gold_letter = answer.strip().upper()
        if gold_letter not in {k.upper() for k in options}:
            gold_letter, _ = match_choice(answer, options)
            if gold_letter is None:
                raise ValueError(f"reference {answer!r} is neither an option letter nor an option text")
        said, why = match_choice(predicted, options)
        if said is None:
            return AnswerMatch(False, f"choice not resolved: {why}", predicted, parsed=why != "names no option")
        ok = said == gold_letter
        return AnswerMatch(ok, f"{why}; reference is {gold_letter}", predicted, parsed=True, exact=ok, recall=float(ok))
    if question_type == "open":
        ref, pred = normalize(answer), normalize(predicted)
        ref_words = ref.split()
        pred_words = set(pred.split())
        recall = sum(w in pred_words for w in ref_words) / len(ref_words) if ref_words else 0.0
        exact = bool(ref) and ref == pred
        reason = "exact match after normalisation" if exact else f"not an exact match; token recall {recall:.2f}"
        return AnswerMatch(exact, reason, predicted, parsed=True, exact=exact, recall=recall)
    raise ValueError(f"unknown question type {question_type!r}; expected closed, open or choice")


def score_output(output: str, answer: str, question_type: QuestionType,
                 options: dict[str, str] | None = None) -> AnswerMatch:
    """Extract the answer from a full model output and judge it; the reason says how it was read."""
    return score_output_explained(output, answer, question_type, options)[0]


def score_output_explained(output: str, answer: str | list[str], question_type: QuestionType,
                           options: dict[str, str] | None = None) -> tuple[AnswerMatch, Extraction]:
    """``score_output`` plus the extraction (for per-item verdict files).

    ``answer`` may list several accepted references (MMMU open items); the best verdict wins.
    """
    ex = extract_answer(output)
    refs = [answer] if isinstance(answer, str) else list(answer)
    if not refs:
        raise ValueError("no reference answer given")
    verdicts = [match_answer(ex.answer, ref, question_type, options) for ref in refs]
    v = max(verdicts, key=lambda x: (x.correct, x.recall))
    if ex.how not in ("answer_tag", "none"):
        v = AnswerMatch(v.correct, f"{v.reason} (answer read from {ex.how.replace('_', ' ')})", v.extracted,
                    v.parsed, v.exact, v.recall)
    return v, ex


# --------------------------------------------------------------------------------------------
# Semantic open-answer check (A.4: "semantically consistent with the reference or within an
# acceptable range"). Evaluation keeps exact match as its headline and reports this beside it;
# the accuracy reward and the synthesis leak check use it, so all three agree on "correct".
# --------------------------------------------------------------------------------------------

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
