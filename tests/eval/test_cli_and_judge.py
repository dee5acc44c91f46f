"""`medsage eval score|list` through the real CLI entry, the eval recipe, and the judge's reply parser."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import pytest

from medsage.eval.benchmarks.base import SplitSizeWarning
from medsage.eval.judge import JudgeConfig, cache_key, parse_scores, summarize_judgements
from medsage.launch.cli import main as medsage

DIMS = ("localization", "visual_analysis", "knowledge", "reasoning")


def test_eval_score_any_system_predictions(tmp_path, capsys):
    preds = tmp_path / "other_system.jsonl"
    preds.write_text("\n".join(json.dumps(r) for r in [
        {"prediction": "<ANSWER>B</ANSWER>", "question": "q", "answer": "B", "answer_type": "choice",
         "options": {"A": "CT", "B": "MRI"}},
        {"prediction": "It is normal.", "question": "q", "answer": "no", "answer_type": "closed"},
    ]) + "\n")
    assert medsage(["eval", "score", str(preds), "--out", str(tmp_path / "scored")]) == 0
    out = capsys.readouterr().out
    assert "accuracy=50.0" in out and "unparsed=1" in out
    verdicts = [json.loads(x) for x in (tmp_path / "scored" / "other_system.verdicts.jsonl").read_text().splitlines()]
    assert verdicts[1]["reason"] == "unparseable yes/no: no yes/no word (answer read from short text)"


def test_eval_score_resolves_benchmark_ids_with_data(layouts, tmp_path, capsys):
    root = layouts.make_pmc_vqa(tmp_path / "PMC-VQA", n=2)
    preds = tmp_path / "p.jsonl"
    preds.write_text(json.dumps({"benchmark": "pmc_vqa", "id": "pmc_vqa-1", "prediction": "<ANSWER>MRI</ANSWER>"}) + "\n")
    assert medsage(["eval", "score", str(preds)]) == 2
    assert "pass --data pmc_vqa=PATH" in capsys.readouterr().err
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SplitSizeWarning)
        assert medsage(["eval", "score", str(preds), "--data", f"pmc_vqa={root}"]) == 0
    assert "pmc_vqa      n=1      accuracy=100.0" in capsys.readouterr().out


def test_eval_list_and_help_stay_light():
    code = ("import sys; from medsage.launch.cli import main; main(['eval', 'list']); "
            "print(sorted(m for m in ('torch', 'transformers', 'ray', 'openai') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "vqa_rad" in out and "test 451" in out and out.strip().endswith("[]")


def test_eval_recipe_composes_with_every_backend():
    from medsage.recipes import compose

    cfg = compose("eval", ["eval.data_root=/data", "eval/backend=openai", "eval.backend.base_url=http://x/v1"])
    assert cfg.eval.benchmarks.slake.path == "/data/Slake1.0" and cfg.eval.backend.name == "openai"
    assert "<LOC>" in cfg.prompt.template and cfg.eval.generation.temperature == 0.0
    assert compose("eval", ["eval/backend=vllm"]).eval.backend.limit_images >= 7  # MMMU items have up to 7 images


@pytest.mark.parametrize("reply,expected", [
    ('{"localization": 4, "visual_analysis": 3, "knowledge": 5, "reasoning": 2}', {d: v for d, v in zip(DIMS, (4, 3, 5, 2))}),
    ('Sure! ```json\n{"Localization": "4", "Visual Analysis": 3.5, "Knowledge": 5, "Reasoning": 2}\n```',
     {"localization": 4, "visual_analysis": 3.5, "knowledge": 5, "reasoning": 2}),
    ("Localization: 4/5\n**Visual analysis**: 3\nKnowledge - 5\nReasoning = 2", {d: v for d, v in zip(DIMS, (4, 3, 5, 2))}),
    ('{"localization": 9, "visual_analysis": 3}', {"visual_analysis": 3}),  # out of range: not a score
    ("I cannot grade this.", {}),
    ("Localization: 45\nReasoning: 3", {"reasoning": 3}),
])
def test_judge_replies_are_parsed_robustly(reply, expected):
    scores, missing = parse_scores(reply, DIMS)
    assert scores == {k: float(v) for k, v in expected.items()}
    assert missing == [d for d in DIMS if d not in expected]


def test_judge_summary_counts_unparsed_and_cache_key_tracks_inputs():
    verdicts = [{"scores": {"localization": 4.0}}, {"scores": {"localization": 2.0, "reasoning": 3.0}}]
    s = summarize_judgements(verdicts, DIMS)
    assert s["dimensions"]["localization"] == {"mean": 3.0, "scored": 2, "unparsed": 0}
    assert s["dimensions"]["knowledge"]["unparsed"] == 2 and s["average"] is None
    cfg = JudgeConfig(base_url="http://x", model="judge", rubric="r {question}", dimensions=DIMS)
    item = {"question": "q", "answer": "a", "prediction": "p"}
    assert cache_key(cfg, item) == cache_key(cfg, dict(item))
    assert cache_key(cfg, item) != cache_key(cfg, {**item, "prediction": "p2"})


def test_eval_run_without_data_root_or_data_fails_clearly(tmp_path, capsys):
    assert medsage(["eval", "run", "model=tiny", "model.path=/x"]) == 2
    assert "eval.data_root" in capsys.readouterr().err
    assert medsage(["eval", "run", "model=tiny", "model.path=/x", f"eval.data_root={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert f"Looked at: {tmp_path}/vqa_rad" in err and "osf.io" in err
