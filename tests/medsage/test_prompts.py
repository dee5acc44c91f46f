"""ONE prompt for SFT, RL and evaluation (paper A.2 Figure 6: "<image>\\n<Instructions>").

The SFT writer, the verl and EasyR1 writers and the evaluation request must put the same text after the
image for the same sample and the same recipe, and that text carries the LVKC instruction and the answer
instruction of the sample's question type.
"""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from medsage.data_pipeline.writers import write_easyr1, write_llava_sft, write_verl_parquet
from medsage.eval.prompting import build_request
from medsage.prompts import PromptConfig, instruction_text
from medsage.recipes import compose


@pytest.mark.parametrize("name", ["lvkc", "plain"])
def test_sft_rl_and_eval_send_the_same_prompt(demo_samples, tmp_path, name):
    prompt = PromptConfig.load(name)
    samples = demo_samples
    sft = json.loads(write_llava_sft(samples, tmp_path / "sft", "s", prompt=prompt).read_text())
    verl = pq.read_table(write_verl_parquet(samples, tmp_path / "v.parquet", prompt=prompt)).to_pylist()
    easy = [json.loads(x) for x in write_easyr1(samples, tmp_path / "e.jsonl", prompt=prompt).read_text().splitlines()]
    assert {s.question_type for s in samples} == {"closed", "choice", "open"}
    for s, ex, row, er in zip(samples, sft, verl, easy):
        request = build_request(s, prompt)
        # Eval: the image parts, then the text (with the newline that follows <image> in training).
        assert [p.kind for p in request.parts] == ["image"] * len(s.images) + ["text"]
        human = "<image>" * len(s.images) + request.text
        assert ex["conversations"][0] == {"from": "human", "value": human}
        assert row["prompt"][-1]["content"] == human and er["problem"] == human
        text = instruction_text(s, prompt)
        assert human == "<image>\n" + text and s.question in text
        assert prompt.instructions[s.question_type] in text  # the per-type answer instruction, everywhere
        if s.options:
            assert all(f"{k}. {v}" in text for k, v in s.options.items())
    if name == "lvkc":
        assert all("<LOC>" in ex["conversations"][0]["value"] for ex in sft)  # the scaffold instruction


def test_a_system_turn_reaches_every_writer(demo_samples, tmp_path):
    import dataclasses

    prompt = dataclasses.replace(PromptConfig.load(), system="You are a radiologist.")
    s = demo_samples[0]
    sft = json.loads(write_llava_sft([s], tmp_path / "sft", "s", prompt=prompt).read_text())[0]
    assert sft["conversations"][0] == {"from": "system", "value": "You are a radiologist."}
    verl = pq.read_table(write_verl_parquet([s], tmp_path / "v.parquet", prompt=prompt)).to_pylist()[0]
    assert verl["prompt"][0] == {"role": "system", "content": "You are a radiologist."}
    assert build_request(s, prompt).system == "You are a radiologist."


def test_one_recipe_group_composes_into_every_stage():
    """data, synthesis and eval recipes all take `prompt=<name>` from recipes/prompt/."""
    for root, extra in (("eval", []), ("synthesis/default", []), ("data/sage_pool", ["out_dir=x"])):
        cfg = compose(root, ["prompt=plain", *extra])
        assert PromptConfig.from_cfg(cfg.prompt) == PromptConfig.load("plain"), root
    assert PromptConfig.from_cfg(compose("eval").prompt) == PromptConfig.load("lvkc")


def test_unknown_prompt_names_the_choices():
    with pytest.raises(ValueError, match="lvkc"):
        PromptConfig.load("nope")
    with pytest.raises(ValueError, match="tempalte"):
        PromptConfig.from_cfg({"template": "{question}", "tempalte": "x"})


def test_the_viewer_reads_question_and_options_back_from_the_human_turn(demo_samples):
    from medsage.eval.view.records import split_prompt as _split_prompt
    from medsage.prompts import human_turn

    choice = next(s for s in demo_samples if s.options)
    question, options = _split_prompt(human_turn(choice, PromptConfig.load()).replace("<image>", ""))
    assert question == choice.question and options == choice.options  # the instruction is not an option
