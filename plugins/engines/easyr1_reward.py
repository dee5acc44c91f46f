"""EasyR1 reward function built from medsage's reward plugins (plain GRPO only).

    worker.reward.reward_function=<this file>:compute_score

EasyR1 scores a batch: ``compute_score(reward_inputs)`` with one dict per rollout holding
``response``, ``response_length`` and ``ground_truth``; it wants one dict per rollout with
``overall``, ``format`` and ``accuracy``. ``ground_truth`` is the answer cell medsage's EasyR1
writer made (``data_pipeline.writers.easyr1_answer``: answer, question type and options), so a
choice or closed question is judged exactly as verl judges it from its row's ``extra_info``. A
plain answer from another file is typed as evaluation types it (``medsage.vocab.type_of_answer``:
yes/no is closed, anything else open). The composite is normalised within the batch
(``score_batch``), the same numbers verl's batch step gives.
The self-check retry needs verl's agent loop: EasyR1 has no equivalent, so there is none here.
"""

from __future__ import annotations

from typing import Any


def _item(row: dict[str, Any]):
    from medsage.data_pipeline.writers import read_easyr1_answer
    from medsage.plugins.rewards import reward_input_from_row

    answer, extra = read_easyr1_answer(row["ground_truth"])
    extra.update({k: row[k] for k in ("question_type", "options", "id") if row.get(k) is not None})
    return reward_input_from_row(row["response"], answer, extra)


def compute_score(reward_inputs: list[dict[str, Any]], reward: str = "composite",
                  reward_params: dict | None = None, **_: Any) -> list[dict[str, float]]:
    from medsage.plugins.rewards import engine_reward, on_grid, recipe_component
    from medsage.plugins.rewards.composite import CompositeReward

    if not isinstance(reward_inputs, list):
        raise TypeError("EasyR1 passes a list of reward inputs; is worker.reward.reward_type batch?")
    items = [_item(row) for row in reward_inputs]
    scorer = engine_reward(reward, reward_params)
    overall = ([o["overall"] for o in scorer.score_batch(items)] if isinstance(scorer, CompositeReward)
               else [scorer(it)["overall"] for it in items])
    # the columns as the recipe's own components score them (its accuracy rule, its format weight)
    accuracy, fmt = (engine_reward(name, recipe_component(reward, reward_params, name)) for name in ("accuracy", "format"))
    return [{"overall": on_grid(o), "format": fmt(it)["overall"], "accuracy": accuracy(it)["overall"]}
            for o, it in zip(overall, items)]
