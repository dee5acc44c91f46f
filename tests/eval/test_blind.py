"""Blind baseline: ``eval.blind=true`` sends blank images of the same size; the report shows both columns."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from PIL import Image

from medsage.eval.benchmarks.base import SplitSizeWarning
from medsage.eval.blind import blind_samples
from medsage.eval.report.blind import blind_section
from medsage.recipes import compose


def test_blind_samples_are_blank_at_the_original_size(layouts, tmp_path):
    root = layouts.make_vqa_rad_original(tmp_path / "vqa_rad", n_test=2, n_train=0)
    from medsage.eval.benchmarks.base import load_benchmark

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SplitSizeWarning)
        samples = load_benchmark("vqa_rad", root)
    blind = blind_samples(samples, tmp_path / "blank")
    assert [s.id for s in blind] == [s.id for s in samples] and [s.answer for s in blind] == [s.answer for s in samples]
    for seen, blank in zip(samples, blind):
        img = Image.open(blank.images[0])
        assert img.size == Image.open(seen.images[0]).size and not np.asarray(img).any()
    assert len({s.images[0] for s in blind}) == 1  # one blank file per size
    assert samples[0].images[0] != blind[0].images[0]


def test_report_section_pairs_sighted_and_blind():
    runs = [{"label": "m", "summaries": {"vqa_rad": {"accuracy": 60.0}}, "blind_summaries": {"vqa_rad": {"accuracy": 52.5}}},
            {"label": "other", "summaries": {"slake": {"accuracy": 70.0}}}]
    text = blind_section(runs)
    assert "| m | vqa_rad | 60.0 | 52.5 | 7.5 |" in text and "other" not in text
    assert blind_section(runs[1:]) == ""


@pytest.mark.slow
def test_blind_run_beside_the_sighted_one(tiny_model_dir, layouts, tmp_path):
    from medsage.eval.report.tables import write_report
    from medsage.eval.run import evaluate

    root = tmp_path / "data"
    layouts.make_vqa_rad_original(root / "vqa_rad", n_test=2, n_train=0)
    out = tmp_path / "runs" / "tiny"
    args = ["model=tiny", f"model.path={tiny_model_dir}", f"eval.data_root={root}", f"eval.output_dir={out}",
            f"eval.image_cache={tmp_path}/cache", "eval.generation.max_new_tokens=4", "eval/benchmarks=paper_five",
            "~eval.benchmarks.slake", "~eval.benchmarks.pathvqa", "~eval.benchmarks.pmc_vqa",
            "~eval.benchmarks.mmmu_med", "eval.label=tiny"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SplitSizeWarning)
        evaluate(compose("eval", args))
        evaluate(compose("eval", [*args, "eval.blind=true"]))
    blind_lines = [json.loads(x) for x in (out / "vqa_rad" / "predictions.blind.jsonl").read_text().splitlines()]
    assert len(blind_lines) == 2 and all("blank_" in r["images"][0] for r in blind_lines)
    run = json.loads((out / "run.json").read_text())
    assert run["summaries"]["vqa_rad"]["n"] == run["blind_summaries"]["vqa_rad"]["n"] == 2
    assert run["data_files"]["vqa_rad"]["layout"] == "original"
    assert run["summaries"]["vqa_rad"]["data"]["files"][0].endswith("VQA_RAD Dataset Public.json")
    report = write_report([tmp_path / "runs"], tmp_path / "report")["report.md"].read_text()
    assert "Blind baseline" in report and "| tiny | vqa_rad |" in report
