"""SFT retry rows (rpa.retry_share): their share, their four turns, and their tokens against the RL loop.

- the share and the report, the rows' content (a wrong τ1 whose conclusion follows it, the request the RL loop
  sends, a check span written from the measurements, the kept trajectory as τ2), and the default of none;
- LLaMA-Factory's own preprocessing of a retry row (mask_history, as the SFT recipes set it): every τ1 label is
  IGNORE and the trained tokens are exactly the last assistant turn;
- the row's tokens equal the token stream the real self-check loop (plugins/self_check/loop.py) builds for the
  same verl row when the policy writes that τ1 and that check + τ2 (a scripted server stands in for vLLM, which
  needs a GPU; the prompt, the request turn and the <CHECK> opener are the loop's own).
"""

from __future__ import annotations

import json

import pytest
from medsage.data_pipeline.synthesis.retry import RETRY_KEY, RetryConfig, retry_count
from medsage.data_pipeline.synthesis.run import run_synthesis, summary_line
from medsage.recipes import compose, recipes_dir
from omegaconf import OmegaConf

from medsage.answers import match_answer
from medsage.prompts import SELF_CHECK_REQUEST
from medsage.records import read_records
from medsage.scaffold import CHECK_TAG, check_strict, split_retry


def _cfg(**over):
    return OmegaConf.to_container(compose("synthesis/default", [f"{k}={v}" for k, v in over.items()]))


def _samples(demo_samples):
    for s in demo_samples:
        s.trajectory = None  # what `medsage data` hands over: RoIs, no trajectory
    return demo_samples


@pytest.fixture
def retry_run(demo_samples, tmp_path):
    return run_synthesis(_samples(demo_samples), _cfg(**{"rpa.retry_share": 0.2, "rpa.max_templates": 2}), tmp_path / "out")


def test_retry_rows_have_the_stated_share_and_are_counted(retry_run, tmp_path):
    rep = retry_run.report["retry"]
    kept = retry_run.report["trajectories_kept"]
    assert rep["rows_wanted"] == retry_count(0.2, kept) == round(0.2 * kept / 0.8) > 0
    assert rep["rows"] == min(rep["rows_wanted"], rep["eligible"]) and rep["shortfall"] == rep["rows_wanted"] - rep["rows"]
    assert rep["share"] == pytest.approx(rep["rows"] / (kept + rep["rows"]), abs=1e-4)
    assert "retry rows" in summary_line(retry_run.report)
    retries = list(read_records(tmp_path / "out" / "retry.jsonl"))
    assert len(retries) == rep["rows"]
    sft = json.loads((tmp_path / "out" / "sft" / "sage_sft.json").read_text())
    assert len(sft) == kept + rep["rows"]
    assert sum(len(ex["conversations"]) == 4 for ex in sft) == rep["rows"]
    # kept.jsonl (what SAGE-rl samples) holds no retry row
    assert not any(RETRY_KEY in s.metadata for s in read_records(tmp_path / "out" / "kept.jsonl"))


def test_retry_row_is_wrong_tau1_request_check_and_corrected_tau2(retry_run, tmp_path):
    kept = {s.id: s for s in retry_run.kept}
    sft = {ex["id"]: ex for ex in json.loads((tmp_path / "out" / "sft" / "sage_sft.json").read_text())}
    retries = list(read_records(tmp_path / "out" / "retry.jsonl"))
    assert {r.question_type for r in retries} <= {"closed", "choice"}
    for row in retries:
        source = kept[row.metadata[RETRY_KEY]["of"]]
        human, first, request, revision = (t["value"] for t in sft[row.id]["conversations"])
        assert [t["from"] for t in sft[row.id]["conversations"]] == ["human", "gpt", "human", "gpt"]
        assert human == sft[source.id]["conversations"][0]["value"]  # the same question, image and prompt
        # τ1: a strict LVKC trajectory whose answer is wrong and whose conclusion argues for that answer
        tau1, issues = check_strict(first, require_region=True)
        assert issues == []
        assert not match_answer(tau1.answer, row.answer, row.question_type, row.options).correct
        assert tau1.answer in tau1.con and tau1.vis != source.trajectory.vis  # it misread the region
        assert request == SELF_CHECK_REQUEST
        # the policy's turn: "<CHECK> " + the check, closed, then the kept trajectory itself
        assert revision.startswith(f"<{CHECK_TAG}> ")
        before, check, tau2 = split_retry(revision)
        assert before == "" and tau2 == source.trajectory.render()
        for dimension in ("Visual grounding:", "Visual analysis:", "Knowledge consistency:"):
            assert dimension in check
        finding = source.trajectory.vis.split("Region: ")[1].rstrip(".")
        assert finding in check and tau1.answer in check  # written from the measured evidence, names τ1's error


def test_no_retry_rows_by_default_and_a_bad_share_is_refused(demo_samples, tmp_path):
    result = run_synthesis(_samples(demo_samples[:4]), _cfg(**{"rpa.max_templates": 1}), tmp_path / "out")
    assert result.report["retry"]["rows"] == 0 and (tmp_path / "out" / "retry.jsonl").read_text() == ""
    sft = json.loads((tmp_path / "out" / "sft" / "sage_sft.json").read_text())
    assert all(len(ex["conversations"]) == 2 for ex in sft)
    with pytest.raises(ValueError, match=r"rpa.retry_share must be in \[0, 1\)"):
        run_synthesis(demo_samples[:2], _cfg(**{"rpa.retry_share": 1.0}), tmp_path / "bad")
    assert not (tmp_path / "bad" / "report.json").exists()


def test_cli_takes_the_rl_recipes_request_and_refuses_a_bad_share(demo_samples, tmp_path, capsys):
    from medsage.data_pipeline.synthesis.cli import main

    from medsage.records import write_records

    write_records(tmp_path / "pool.jsonl", _samples(demo_samples[:6]))
    run = ["run", "--records", str(tmp_path / "pool.jsonl"), "--out", str(tmp_path / "out"), "rpa.max_templates=1"]
    assert main([*run, "rpa.retry_share=0.3", "rpa.retry_request='Check the answer.'"]) == 0
    retries = list(read_records(tmp_path / "out" / "retry.jsonl"))
    assert retries and {r.metadata[RETRY_KEY]["request"] for r in retries} == {"Check the answer."}
    assert main([*run, "rpa.retry_share=1.5"]) == 2
    assert "rpa.retry_share must be in [0, 1), got 1.5" in capsys.readouterr().err


def test_the_request_comes_from_one_place():
    from medsage.plugins.self_check import loop

    assert loop.DEFAULT_REQUEST is SELF_CHECK_REQUEST
    assert RetryConfig().request_text is SELF_CHECK_REQUEST
    assert RetryConfig(share=0.1, request="Check the answer.").request_text == "Check the answer."


def test_every_sft_recipe_keeps_tau1_untrained():
    """A retry row's τ1 is context: each SFT recipe trains the last assistant turn only."""
    for path in sorted((recipes_dir() / "sft").glob("*.yaml")):
        assert OmegaConf.load(path).get("mask_history") is True, f"{path}: mask_history must be true (retry rows)"


# ------------------------------------------------------------------------------------------------
# tokens: LLaMA-Factory's preprocessing of the row vs the RL loop's stream
# ------------------------------------------------------------------------------------------------


def _lf_rows(dataset_dir, tiny_model_dir, tmp_path):
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    sft = OmegaConf.load(recipes_dir() / "sft" / "tiny_cpu.yaml")
    model_args, data_args, training_args, _, _ = get_train_args({
        "model_name_or_path": str(tiny_model_dir), "stage": "sft", "do_train": True, "finetuning_type": "full",
        "dataset": "sage_sft", "dataset_dir": str(dataset_dir), "template": "qwen2_vl", "cutoff_len": 2048,
        "mask_history": sft.mask_history, "output_dir": str(tmp_path / "lf_out"), "overwrite_cache": True,
        "preprocessing_num_workers": None, "report_to": "none", "bf16": False, "image_max_pixels": 50176,
    })
    tokenizer_module = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], data_args)
    return get_dataset(template, model_args, data_args, training_args, stage="sft", **tokenizer_module)["train_dataset"]


class ScriptedPolicy:
    """Stands in for verl's LLM server: answers each call with the next scripted token ids."""

    def __init__(self, outputs):
        self.outputs, self.prompts = list(outputs), []

    async def generate(self, request_id, *, prompt_ids, sampling_params, **_):
        from verl.workers.rollout.replica import TokenOutput

        self.prompts.append(list(prompt_ids))
        return TokenOutput(token_ids=self.outputs.pop(0))


def _loop_stream(row_path, tiny_model_dir, tmp_path, tau1_text, revision_text):
    import asyncio

    from medsage.plugins.self_check.loop import CHECK_OPEN, SelfCheckAgentLoop
    from transformers import AutoProcessor, AutoTokenizer
    from verl.experimental.agent_loop.agent_loop import DictConfigWrap
    from verl.utils.dataset.rl_dataset import RLHFDataset

    tokenizer, processor = AutoTokenizer.from_pretrained(tiny_model_dir), AutoProcessor.from_pretrained(tiny_model_dir)
    data = OmegaConf.create({"filter_overlong_prompts": False, "cache_dir": str(tmp_path / "verl_cache"),
                             "apply_chat_template_kwargs": {}, "mm_processor_kwargs": {}})
    row = RLHFDataset(str(row_path), tokenizer, data, processor)[0]
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert revision_text.startswith(CHECK_OPEN)  # the loop writes the opener; the policy writes the rest
    policy = ScriptedPolicy([tokenizer.encode(tau1_text, add_special_tokens=False) + [end],
                             tokenizer.encode(revision_text[len(CHECK_OPEN):], add_special_tokens=False) + [end]])
    cfg = OmegaConf.create({"actor_rollout_ref": {"rollout": {"prompt_length": 2048, "response_length": 2048}},
                            "data": data})

    async def go():  # the loop binds the running event loop when it is built
        loop = SelfCheckAgentLoop(trainer_config=DictConfigWrap(cfg), server_manager=policy, tokenizer=tokenizer,
                                  processor=processor, dataset_cls=RLHFDataset, data_config=DictConfigWrap(cfg.data),
                                  hf_model_type="qwen2_5_vl")
        return await loop.run({"temperature": 0}, raw_prompt=row["raw_prompt"], reward_model=row["reward_model"],
                              extra_info=row["extra_info"])

    return tokenizer, asyncio.run(go()), policy


def test_retry_row_tokens_are_the_rl_loops_and_tau1_is_not_trained(retry_run, tiny_model_dir, tmp_path):
    from llamafactory.extras.constants import IGNORE_INDEX
    from medsage.data_pipeline.writers import (
        sft_example,
        write_llava_sft,
        write_verl_parquet,
    )
    from medsage.plugins.self_check.advantage import RETRIED_KEY

    from medsage.prompts import PromptConfig

    row = next(r for r in read_records(tmp_path / "out" / "retry.jsonl") if r.question_type == "closed")
    write_llava_sft([row], tmp_path / "one", "sage_sft")
    (lf,) = _lf_rows(tmp_path / "one", tiny_model_dir, tmp_path)
    turns = [t["value"] for t in sft_example(row, PromptConfig.load())["conversations"]]
    tokenizer, out, policy = _loop_stream(write_verl_parquet([row], tmp_path / "rl.parquet"), tiny_model_dir,
                                          tmp_path, turns[1], turns[3])
    assert out.extra_fields[RETRIED_KEY] is True and out.extra_fields["medsage_first_correct"] is False

    stream = list(out.prompt_ids) + list(out.response_ids)
    newline = tokenizer.encode("\n", add_special_tokens=False)
    # LLaMA-Factory closes every assistant turn with "<|im_end|>\n"; the rollout ends at the policy's <|im_end|>.
    assert lf["input_ids"] == stream + newline, "the SFT row and the RL rollout are different token streams"

    # Trained tokens: exactly the last assistant turn ("<CHECK> ...τ2<|im_end|>\n"), which starts where the loop's
    # second call started minus the opener it wrote; every τ1 token (and every prompt token) is IGNORE.
    opener = len(tokenizer.encode(f"<{CHECK_TAG}>", add_special_tokens=False))
    start = len(policy.prompts[1]) - opener
    labels = lf["labels"]
    assert all(t == IGNORE_INDEX for t in labels[:start])
    assert labels[start:] == lf["input_ids"][start:]
    tau1 = range(len(policy.prompts[0]), len(policy.prompts[0]) + len(tokenizer.encode(turns[1], add_special_tokens=False)))
    assert tokenizer.decode([lf["input_ids"][i] for i in tau1]) == turns[1] and all(labels[i] == IGNORE_INDEX for i in tau1)
