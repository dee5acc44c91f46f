"""One yes/no rule: the RL rewards and the evaluation benchmarks type an untyped item the same way."""

import pytest

from medsage.plugins.engines.easyr1_reward import _item
from medsage.plugins.rewards import reward_input_from_row
from medsage.vocab import type_of_answer


@pytest.mark.parametrize("answer, expected", [("yes", "closed"), (" No ", "closed"), ("YES", "closed"),
                                              ("no visible abnormality", "open"), ("present", "open"),
                                              ("left lung", "open")])
def test_rl_and_eval_type_an_untyped_answer_alike(answer, expected):
    assert type_of_answer(answer) == expected
    assert reward_input_from_row("r", answer, None).question_type == expected  # verl rows
    assert _item({"response": "r", "ground_truth": answer}).question_type == expected  # EasyR1 rows
