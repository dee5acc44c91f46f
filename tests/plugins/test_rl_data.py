"""RL rows and verl's prompt filter: image tokens counted as the model sees them, rows verl would drop refused.

The model is the tiny Qwen2.5-VL with the image processor bounds Qwen2.5-VL-7B ships (up to 12,845,056
pixels), so a large image takes as many tokens as it would with the real model.
"""

from __future__ import annotations

import json
import shutil

import pytest

pytest.importorskip("verl")
pytest.importorskip("qwen_vl_utils")

from medsage.images import PixelBounds, vision_size  # noqa: E402

QWEN_7B = PixelBounds(3136, 1003520)  # recipes/model/qwen2_5_vl_7b.yaml, as SFT resizes


@pytest.mark.parametrize("width, height", [(1024, 1024), (850, 850), (224, 224), (3000, 1200), (57, 3000),
                                           (4000, 4000), (30, 30), (1023, 769)])
@pytest.mark.parametrize("bounds", [QWEN_7B, PixelBounds(3136, 50176), PixelBounds(3136, 16384 * 28 * 28)])
def test_vision_size_is_the_processors_resize(width, height, bounds):
    from qwen_vl_utils import smart_resize
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize as processor_resize

    assert vision_size(width, height, bounds) == tuple(reversed(smart_resize(height, width, 28, bounds.min_pixels,
                                                                             bounds.max_pixels)))
    assert vision_size(width, height, bounds) == tuple(reversed(processor_resize(height, width, 28, bounds.min_pixels,
                                                                                 bounds.max_pixels)))


@pytest.fixture(scope="module")
def qwen7b_bounds_model(tiny_model_dir, tmp_path_factory):
    """The tiny model's folder with the image processor bounds of Qwen2.5-VL-7B's processor config."""
    out = tmp_path_factory.mktemp("tiny_7b_processor")
    for f in tiny_model_dir.iterdir():
        shutil.copy(f, out / f.name)
    config = json.loads((out / "processor_config.json").read_text())
    config["image_processor"]["size"] = {"shortest_edge": 3136, "longest_edge": 12845056}
    (out / "processor_config.json").write_text(json.dumps(config))
    return out


@pytest.fixture
def rl_rows(tmp_path):
    """Three verl rows: a 1024x1024 image without pixel bounds, the same with the 7B bounds, a 224x224 one."""
    from PIL import Image

    from medsage.data_pipeline.writers import write_verl_parquet
    from medsage.launch.demo.samples import make_demo_samples

    samples = make_demo_samples(tmp_path / "demo", n=3)
    for s, side in zip(samples, (1024, 1024, 224)):
        s.images = s.images[:1]
        Image.new("RGB", (side, side), (90, 90, 90)).save(s.images[0])
    unbounded = write_verl_parquet(samples[:1], tmp_path / "unbounded.parquet")
    bounded = write_verl_parquet(samples[1:], tmp_path / "bounded.parquet", pixels=QWEN_7B)
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = pq.read_table(unbounded).to_pylist() + pq.read_table(bounded).to_pylist()
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "rl.parquet")  # one file, both kinds of row
    return tmp_path / "rl.parquet"


def _verl_length(processor, row) -> int:
    """A row's prompt length the way verl's RLHFDataset computes it (its image loader, the processor)."""
    from verl.utils.dataset.vision_utils import process_image

    entries = [{k: v for k, v in e.items() if v is not None} for e in row["images"]]
    pieces = row["prompt"][-1]["content"].split("<image>")
    content = [{"type": "text", "text": pieces[0]}] if pieces[0] else []
    for entry, text in zip(entries, pieces[1:]):
        content += [{"type": "image", **entry}] + ([{"type": "text", "text": text}] if text else [])
    messages = row["prompt"][:-1] + [{"role": "user", "content": content}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    images = [process_image(dict(e), image_patch_size=14) for e in entries]
    return len(processor(text=[text], images=images)["input_ids"][0])


def test_prompt_length_is_verls_and_verl_drops_what_it_names(qwen7b_bounds_model, rl_rows):
    import pyarrow.parquet as pq
    from omegaconf import OmegaConf
    from transformers import AutoProcessor
    from verl.utils.dataset.rl_dataset import RLHFDataset

    from medsage.plugins.engines.verl_data import overlong_report, prompt_lengths

    processor = AutoProcessor.from_pretrained(qwen7b_bounds_model)
    lengths = prompt_lengths(rl_rows, processor)
    rows = pq.read_table(rl_rows).to_pylist()
    assert [r.tokens for r in lengths] == [_verl_length(processor, row) for row in rows]
    # unbounded, qwen-vl-utils lets the 1024x1024 image keep its 1,369 tokens; the 7B bounds make it 1,225
    assert [r.image_tokens for r in lengths] == [[1369], [1225], [64]]

    config = OmegaConf.create({"max_prompt_length": 1024, "filter_overlong_prompts": True, "prompt_key": "prompt",
                               "image_key": "images", "filter_overlong_prompts_workers": 1})
    kept = RLHFDataset(data_files=[str(rl_rows)], tokenizer=processor.tokenizer, config=config, processor=processor)
    assert len(kept) == sum(r.tokens <= 1024 for r in lengths) == 1  # verl keeps exactly what fits
    report = overlong_report(rl_rows, lengths, 1024)
    assert "2 of 3 rows are longer than rl.max_prompt_length=1024" in report and "1024x1024 image" in report
    assert overlong_report(rl_rows, lengths, 2000) is None


def test_medsage_rl_refuses_a_dataset_verl_would_shrink(qwen7b_bounds_model, rl_rows, tmp_path, capsys):
    from medsage.launch import rl as rl_launch

    args = ["model=tiny", f"model.path={qwen7b_bounds_model}", "cluster=local_cpu", "dry_run=true",
            f"train_files={rl_rows}", f"output_dir={tmp_path / 'run'}"]
    assert rl_launch.main(args) == 2
    err = capsys.readouterr().err
    assert "2 of 3 rows are longer than rl.max_prompt_length=1024" in err and "filter_overlong_prompts" in err
    assert "row 0 (id " in err and "1369 for a 1024x1024 image" in err
    assert rl_launch.main(args + ["rl.max_prompt_length=1604"]) == 0  # the longest row fits: composed and validated


def test_steps_report_is_verls_loader_arithmetic():
    from medsage.plugins.engines.verl_data import steps_report

    assert steps_report(["a.parquet"], 28, 2, 1000, 100) is None       # 14 steps an epoch, 14,000 in all
    assert steps_report(["a.parquet"], 29, 2, 7, 98) is None           # the odd row is dropped: 14 x 7 = 98
    short = steps_report(["a.parquet"], 29, 2, 7, 99)
    assert "14 steps of 2 prompts an epoch, 98 in rl.epochs=7" in short and "rl.epochs=8" in short
    assert steps_report(["a.parquet"], 28, 2, 2, None) is None         # no step count asked for: the epochs decide
    assert "fewer than one step's 4 prompts" in steps_report(["a.parquet", "b.parquet"], 3, 4, 5, None)


def test_medsage_rl_refuses_a_step_count_the_rows_cannot_last(qwen7b_bounds_model, rl_rows, tmp_path, capsys):
    """verl would end with the epochs at step 1, exit 0 and save no checkpoint of step 2: refused before launch."""
    from medsage.launch import rl as rl_launch

    args = ["model=tiny", f"model.path={qwen7b_bounds_model}", "cluster=local_cpu", "dry_run=true",
            f"train_files={rl_rows}", f"output_dir={tmp_path / 'run'}", "rl.max_prompt_length=1604",
            "rl.rollout_batch_prompts=2", "rl.rollout_n=4", "rl.micro_batch_per_device=4", "rl.grad_accum=1"]
    two_steps = "extra_overrides=['trainer.total_training_steps=2']"
    assert rl_launch.main(args + ["rl.epochs=1", two_steps]) == 2
    err = capsys.readouterr().err
    assert "trainer.total_training_steps=2" in err and "3 rows: 1 step of 2 prompts an epoch" in err, err
    assert "Set rl.epochs=2" in err and str(rl_rows) in err
    assert rl_launch.main(args + ["rl.epochs=2", two_steps]) == 0


def test_the_rl_data_stage_counts_the_whole_prompt_with_the_models_processor(qwen7b_bounds_model, tmp_path):
    """An 896x896 image takes exactly 1,024 tokens: alone it fits the 1,024-token prompt, with the question it
    does not. With the model's processor the data stage counts both, as verl will, and sets the row aside."""
    from PIL import Image

    from medsage.data_pipeline.synthesis.cli import main
    from medsage.launch.demo.samples import make_demo_samples
    from medsage.records import write_records

    samples = [s for s in make_demo_samples(tmp_path / "demo", n=6) if s.trajectory is not None and s.kept][:2]
    for s in samples:
        s.images = s.images[:1]
    Image.new("RGB", (896, 896), (90, 90, 90)).save(samples[0].images[0])
    Image.new("RGB", (224, 224), (90, 90, 90)).save(samples[1].images[0])
    write_records(tmp_path / "kept.jsonl", samples)

    def run(out, *extra):
        assert main(["rl", "--kept", str(tmp_path / "kept.jsonl"), "--out", str(tmp_path / out), "--model",
                     "qwen2_5_vl_7b", *extra]) == 0
        return [json.loads(line) for line in (tmp_path / out / "sage_rl.rejected.jsonl").read_text().splitlines()]

    assert run("images_only") == []  # 1,024 image tokens: not over the limit by themselves
    (rejected,) = run("whole", "--model-path", str(qwen7b_bounds_model))
    assert rejected["id"] == samples[0].id and rejected["reason"] == "prompt-over-limit"
    assert rejected["image_tokens"] == 1024 and rejected["prompt_tokens"] > 1024
    summary = json.loads((tmp_path / "whole" / "sage_rl.summary.json").read_text())["prompt_budget"]
    assert summary["counted"] == "text and images" and summary["rejected"] == 1
