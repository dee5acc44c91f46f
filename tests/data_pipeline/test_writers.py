"""The writers' files load through the engines' own readers: LLaMA-Factory's dataset loader (zero dropped
examples) and verl's RLHFDataset; the EasyR1 file has the keys its dataset reads."""

from __future__ import annotations

import importlib.util
import json

import pytest

from medsage.data_pipeline.sources.base import build_samples
from medsage.data_pipeline.quality import QualityConfig
from medsage.data_pipeline.questions import QuestionConfig
from medsage.data_pipeline.rois import RoIConfig, roi_region
from medsage.data_pipeline.writers import (easyr1_row, read_easyr1_answer, rl_options, write_easyr1, write_llava_sft,
                                           write_verl_parquet)
from medsage.prompts import PromptConfig, human_turn, instruction_text
from medsage.registry import SOURCES
from medsage.scaffold import Trajectory, check_strict


@pytest.fixture
def records(tmp_path, make_source):
    """Ingested records from generated DeepLesion and COCO sources (closed, choice and open questions)."""
    out = []
    for kind in ("deeplesion", "roboflow_coco"):
        adapter = SOURCES.get(kind)(make_source(kind, tmp_path / kind), tmp_path / "images")
        for i, key in enumerate(adapter.inputs()):
            samples, _ = build_samples(adapter, key, i, quality=QualityConfig(), questions=QuestionConfig(),
                                       rois=RoIConfig())
            out += samples
    assert {s.question_type for s in out} == {"closed", "choice", "open"}
    return out


def _with_trajectory(sample):
    """A template trajectory from the record's first RoI, as the offline synthesizer would write it."""
    width, height = sample.metadata["image_size"]
    region = roi_region(sample.rois[0], width, height)
    answer = {"closed": sample.answer, "choice": sample.answer, "open": sample.answer}[sample.question_type]
    sample.trajectory = Trajectory(loc=f"The finding lies here {region.to_json()}.", vis="A bright, well defined focus.",
                                   know="A focal bright area fits the labelled finding.",
                                   con="The evidence supports the answer.", answer=answer)
    assert not check_strict(sample.trajectory.render(), require_region=True)[1]
    return sample


def test_sft_file_loads_through_llamafactory_with_zero_dropped(records, tiny_model_dir, tmp_path):
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    samples = [_with_trajectory(s) for s in records]
    dataset_dir = tmp_path / "sft"
    data_file = write_llava_sft(samples, dataset_dir, "sage_sft")
    examples = json.loads(data_file.read_text())
    assert len(examples) == len(samples)
    assert all(ex["conversations"][0]["value"].count("<image>") == len(ex["images"]) for ex in examples)

    model_args, data_args, training_args, _, _ = get_train_args({
        "model_name_or_path": str(tiny_model_dir), "stage": "sft", "do_train": True, "finetuning_type": "full",
        "dataset": "sage_sft", "dataset_dir": str(dataset_dir), "template": "qwen2_vl", "cutoff_len": 2048,
        "output_dir": str(tmp_path / "lf_out"), "overwrite_cache": True, "preprocessing_num_workers": None,
        "report_to": "none", "bf16": False, "image_max_pixels": 50176,
    })
    tokenizer_module = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], data_args)
    module = get_dataset(template, model_args, data_args, training_args, stage="sft", **tokenizer_module)
    train = module["train_dataset"]
    assert len(train) == len(examples)  # LLaMA-Factory drops invalid examples silently; none may be dropped
    labelled = [sum(1 for t in row["labels"] if t != -100) for row in train]
    assert min(labelled) > 0  # every example trains on its response


def test_verl_parquet_is_read_by_verl_rlhf_dataset(records, tiny_model_dir, tmp_path):
    from omegaconf import OmegaConf
    from transformers import AutoProcessor, AutoTokenizer
    from verl.utils.dataset.rl_dataset import RLHFDataset

    import dataclasses

    prompt = dataclasses.replace(PromptConfig.load("lvkc"), system="Answer in LVKC stages.")
    path = write_verl_parquet(records, tmp_path / "rl" / "verl.parquet", prompt=prompt)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    # filter_overlong_prompts needs qwen_vl_utils (a vLLM-environment package) to size image prompts; the
    # rows themselves are what is under test here.
    config = OmegaConf.create({"prompt_key": "prompt", "image_key": "images", "max_prompt_length": 4096,
                               "filter_overlong_prompts": False, "cache_dir": str(tmp_path / "verl_cache")})
    dataset = RLHFDataset(str(path), tokenizer, config, processor)
    assert len(dataset) == len(records)
    by_id = {s.id: s for s in records}
    for i in range(len(dataset)):
        row = dataset[i]
        sample = by_id[row["extra_info"]["id"]]
        system, user = row["raw_prompt"]
        assert system["content"] == [{"type": "text", "text": "Answer in LVKC stages."}]
        kinds = [part["type"] for part in user["content"]]
        assert kinds == ["image", "text"]
        assert user["content"][0]["image"] == sample.images[0]
        assert user["content"][1]["text"] == "\n" + instruction_text(sample, prompt)  # Figure 6: <image>\n...
        assert row["reward_model"]["ground_truth"] == sample.answer
        assert row["extra_info"]["question_type"] == sample.question_type
        assert rl_options(row["extra_info"]) == sample.options
        assert row["extra_info"]["question"] == sample.prompt_text()  # the trajectory scorer reads it
        # the reference trajectory by stage, which the format reward checks each stage against (A.4)
        assert row["extra_info"]["reference"] == ({k: getattr(sample.trajectory, k) for k in
                                                   ("loc", "vis", "know", "con", "answer")} if sample.trajectory else None)
        assert row["index"] == i and row["data_source"] == sample.source
    # The chat template of the model turns the raw prompt into text with one vision span per image.
    text = processor.apply_chat_template(dataset[0]["raw_prompt"], add_generation_prompt=True, tokenize=False)
    assert text.count("<|vision_start|>") == 1


def test_verl_parquet_can_embed_image_bytes(records, tiny_model_dir, tmp_path):
    from omegaconf import OmegaConf
    from transformers import AutoProcessor, AutoTokenizer
    from verl.utils.dataset.rl_dataset import RLHFDataset

    path = write_verl_parquet(records[:3], tmp_path / "embedded.parquet", embed_images=True)
    config = OmegaConf.create({"filter_overlong_prompts": False, "cache_dir": str(tmp_path / "verl_cache")})
    dataset = RLHFDataset(str(path), AutoTokenizer.from_pretrained(tiny_model_dir), config,
                          AutoProcessor.from_pretrained(tiny_model_dir))
    image = dataset[0]["raw_prompt"][0]["content"][0]["image"]
    assert image.size == tuple(records[0].metadata["image_size"])


def test_easyr1_rows_jsonl_and_parquet(records, tmp_path):
    import pyarrow.parquet as pq

    path = write_easyr1(records, tmp_path / "easyr1.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == len(records)
    for row, sample in zip(rows, records):
        assert row["problem"] == human_turn(sample, PromptConfig.load("lvkc"))
        assert read_easyr1_answer(row["answer"]) == (sample.answer, {"question_type": sample.question_type,
                                                                     **({"options": sample.options} if sample.options else {})})
        assert row["images"] == sample.images
    custom = easyr1_row(records[0], PromptConfig.load(), prompt_key="prompt", answer_key="solution", image_key="imgs")
    assert {"prompt", "solution", "imgs"} <= set(custom)
    table = pq.read_table(write_easyr1(records, tmp_path / "easyr1.parquet", fmt="parquet"))
    assert table.num_rows == len(records) and {"problem", "answer", "images"} <= set(table.column_names)
    with pytest.raises(ValueError, match="embed_images"):
        write_easyr1(records, tmp_path / "x.jsonl", embed_images=True)


def test_rejected_records_are_not_written(records, tmp_path):
    records[0].rejection = "dedup-eval-leak"
    rows = [json.loads(line) for line in write_easyr1(records, tmp_path / "e.jsonl").read_text().splitlines()]
    assert records[0].id not in {r["id"] for r in rows} and len(rows) == len(records) - 1


@pytest.mark.skipif(importlib.util.find_spec("qwen_vl_utils") is None,
                    reason="verl sizes image prompts with qwen_vl_utils, which the RL/vLLM environment installs "
                           "and this CPU test environment does not")
def test_verl_prompt_length_filter_keeps_every_row(records, tiny_model_dir, tmp_path):
    from omegaconf import OmegaConf
    from transformers import AutoProcessor, AutoTokenizer
    from verl.utils.dataset.rl_dataset import RLHFDataset

    path = write_verl_parquet(records, tmp_path / "verl.parquet")
    config = OmegaConf.create({"filter_overlong_prompts": True, "max_prompt_length": 4096,
                               "filter_overlong_prompts_workers": 1, "cache_dir": str(tmp_path / "verl_cache")})
    dataset = RLHFDataset(str(path), AutoTokenizer.from_pretrained(tiny_model_dir), config,
                          AutoProcessor.from_pretrained(tiny_model_dir))
    assert len(dataset) == len(records)
