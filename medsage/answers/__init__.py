"""Answer extraction and matching: the one package that evaluation, the accuracy reward and the
synthesis leak check use (the semantic open-answer check is in ``semantic.py``, re-exported here).

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
# MedEvalKit-compatible mode (reported beside the headline, never instead of it)
# --------------------------------------------------------------------------------------------
# Our reading of MedEvalKit's rules (alibaba-damo-academy/MedEvalKit, utils/utils.py), written anew:
# - the answer is the last \boxed{...}, else the text inside <answer>...</answer> (lower-cased
#   output), then whatever follows the last "answer:"-like marker, untrimmed;
# - a yes/no reference: periods and newlines removed, right when exactly one of the *substrings*
#   "yes" / "no" occurs and the reference is a substring ("not", "know", "eyes" count);
# - another closed reference: the text equals it; an open reference: exact match, no normalisation;
# - choice: a leading letter, the text before the first "." after a ":", an option text; when none
#   of these is an option, the option most similar to the text (difflib) is taken as the answer.
# Where this mode still departs from MedEvalKit itself: its optional LLM judge for open answers is not
# run; SLAKE OPEN items with a yes/no reference are scored by exact text there (by substring here);
# MMMU goes through MMMU's own parser there; PMC-VQA options keep their "A:" prefix there.
_MEK_MARKERS = ("**answer**:", "**answer**", "*answer*:", "**answer:**", "answer is", "answer:", "答案:",
                "final answer", "final answer is")


def _mek_boxed(text: str) -> str | None:
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 1, start + len("\\boxed{")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return None


def _mek_parse(output: str) -> str:
    text = output.lower()
    boxed = _mek_boxed(text)
    if boxed is not None:
        text = boxed
    elif "<answer>" in text:
        parts = re.findall(r"<answer>(.*?)</answer>", text, re.DOTALL)
        text = " ".join(parts).strip() if parts else text
    for marker in _MEK_MARKERS:
        if marker in text:
            text = text.split(marker)[-1]
    return text


def medevalkit_verdict(output: str, answer: str, question_type: QuestionType,
                       options: dict[str, str] | None = None) -> tuple[bool, str]:
    """``(correct, rule)`` as MedEvalKit would judge; ``rule`` names the rule that decided."""
    import difflib

    ref = str(answer).strip().lower()
    if question_type == "choice":
        letters = [k.lower() for k in sorted(options or {})]
        texts = [str(options[k]).lower() for k in sorted(options or {})]
        text = (output or "").lower()
        blocks = text.split("\n\n")
        if blocks[0] in letters:
            text = blocks[0]
        elif blocks[-1].split(".")[0] in letters:
            text = blocks[-1].split(".")[0]
        text = _mek_parse(text).strip().replace("\n", "")
        head = text.split(".")[0].split(":")[-1]
        if head == ref:
            return True, "choice: the answer as written"
        if head in letters:
            return texts[letters.index(head)] == ref, "choice: a letter"
        if head in texts:
            return ref in letters and head == texts[letters.index(ref)], "choice: an option text"
        ratios = [difflib.SequenceMatcher(None, t, text).ratio() for t in texts]
        best = max(range(len(texts)), key=lambda k: (ratios[k], -k)) if texts else 0
        return bool(texts) and (letters[best] == ref or texts[best] == ref), "choice: most similar option"
    parsed = _mek_parse((output or "").strip())
    if ref in ("yes", "no"):
        flat = parsed.replace("\n", "").replace(".", "")
        return (("yes" in flat) != ("no" in flat)) and ref in flat, "yes/no: substring"
    if question_type == "closed":
        return parsed.replace("\n", "").replace(".", "") == ref, "closed: exact text"
    return parsed == ref, "open: exact text, untrimmed"


# The semantic open-answer check (A.4) lives in its own file of this package; re-exported here so
# every caller keeps reading answers from ``medsage.answers``.
from medsage.answers.semantic import (DEFAULT_RULE, DEFAULT_SYNONYMS, SemanticRule, SemanticVerdict,  # noqa: E402
                                      judged_as_open, semantic_correct, semantic_match, semantic_tokens)
