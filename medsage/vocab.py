"""The words every stage shares, each defined once: the image placeholder, the question types and the
yes/no rule that decides which questions are closed.

A second definition of any of these is how two stages come to disagree (a yes/no item scored as
closed by RL and as open by evaluation), so stages import them from here.
"""

from __future__ import annotations

from typing import Literal, get_args

# One per image, before the question text: LLaMA-Factory (SFT), verl's and EasyR1's datasets (RL)
# all pair the n-th placeholder with the n-th image.
IMAGE_PLACEHOLDER = "<image>"

QuestionType = Literal["closed", "open", "choice"]
QUESTION_TYPES: tuple[str, ...] = get_args(QuestionType)

YES_NO = ("yes", "no")


def type_of_answer(answer: str) -> QuestionType:
    """The question type when a source gives none: a reference answer that is exactly yes or no is closed,
    anything else open (the convention of VQA-RAD, SLAKE and PathVQA). Choice questions carry options and
    are typed by whoever read them."""
    return "closed" if str(answer).strip().lower() in YES_NO else "open"
