"""End to end: the tiny model through the transformers backend on a small generated benchmark (resumed
after an interruption), and through the OpenAI backend against a real `llamafactory-cli api` on
loopback (plus the GPT-score judge against the same server); the report renders from those runs."""

from __future__ import annotations

import json
import socket
import warnings
from pathlib import Path

import pytest

from medsage.eval.benchmarks.base import SplitSizeWarning
from medsage.recipes import compose


def _cfg(tiny, root, out, *extra):
    return compose("eval", ["model=tiny", f"model.path={tiny}", f"eval.data_root={root}", f"eval.output_dir={out}",
                            f"eval.image_cache={out}/cache", "eval.generation.max_new_tokens=8", "eval.batch_size=3",
                            *extra])


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _evaluate(cfg):
    from medsage.eval.run import evaluate

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SplitSizeWarning)  # the generated splits are small on purpose
        return evaluate(cfg)


def test_hf_backend_end_to_end_resumes_and_reports(tiny_model_dir, bench_root, tmp_path):
    out = tmp_path / "runs" / "tiny-hf"
    three = ["eval/benchmarks=paper_five", "~eval.benchmarks.slake", "~eval.benchmarks.pathvqa", "eval.label=tiny-hf",
             "+eval.tags.table=table4", "+eval.tags.alpha=0.2"]
    # An interrupted run: two items per benchmark done, then a half-written line from the kill.
    _evaluate(_cfg(tiny_model_dir, bench_root, out, *three, "eval.limit=2"))
    preds = out / "vqa_rad" / "predictions.jsonl"
    first = _lines(preds)
    assert len(first) == 2
    with preds.open("a") as fh:
        fh.write('{"benchmark": "vqa_rad", "id": "vqa_rad-10')
    summaries = _evaluate(_cfg(tiny_model_dir, bench_root, out, *three))
    again = _lines(preds)
    assert [r["id"] for r in again[:2]] == [r["id"] for r in first] and again[:2] == first  # kept, not redone
    assert len(again) == len({r["id"] for r in again}) == 4
    assert summaries["vqa_rad"]["n"] == 4 and summaries["pmc_vqa"]["n"] == 4 and summaries["mmmu_med"]["n"] == 10
    for name, s in summaries.items():
        verdicts = _lines(out / name / "predictions.verdicts.jsonl")
        assert len(verdicts) == s["n"] and all(v["reason"] for v in verdicts)
        assert s["unparsed"] == sum(not v["parsed"] for v in verdicts)  # a random model: mostly unparseable
    mmmu = _lines(out / "mmmu_med" / "predictions.jsonl")
    assert {r["group"] for r in mmmu} >= {"Pharmacy", "Clinical_Medicine"}
    # Each line names its images, so `medsage view` can draw the item without the benchmark at hand.
    assert all(r["images"] and all(Path(p).is_file() for p in r["images"]) for r in mmmu)
    # Resuming with another decoding setup would mix two setups in one score: refused.
    with pytest.raises(RuntimeError, match=r"different generation; resuming would mix"):
        _evaluate(_cfg(tiny_model_dir, bench_root, out, *three, "eval.generation.max_new_tokens=9"))
    run = json.loads((out / "run.json").read_text())
    assert run["label"] == "tiny-hf" and run["backend"] == "hf" and run["tags"] == {"table": "table4", "alpha": 0.2}

    from medsage.eval.report.tables import main as report_main

    assert report_main([str(tmp_path / "runs"), "--out", str(tmp_path / "report")]) == 0
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| tiny-hf (partial: 3/5 benchmarks) |" in md and "Lingshu-7B" in md and "Δ vs MEDSAGE (Ours)" in md
    assert "Base + SC (α = 0.20) [tiny-hf (partial: 1/3 benchmarks)]" in md
    for png in ("table1.png", "figure5_alpha.png"):
        assert (tmp_path / "report" / png).read_bytes()[:4] == b"\x89PNG"




def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_openai_backend_against_llamafactory_api_and_judge(lf_api, tiny_model_dir, bench_root, tmp_path):
    out = tmp_path / "runs" / "tiny-openai"
    cfg = _cfg(tiny_model_dir, bench_root, out, "eval/backend=openai", f"eval.backend.base_url={lf_api}",
               "eval.backend.model=tiny", "eval.label=tiny-openai", "eval.limit=3", "eval.batch_size=2",
               "eval.backend.concurrency=2")
    summaries = _evaluate(cfg)
    assert set(summaries) == {"vqa_rad", "slake", "pathvqa", "pmc_vqa", "mmmu_med"}
    assert all(s["n"] == 3 for s in summaries.values())
    rows = _lines(out / "mmmu_med" / "predictions.jsonl")
    assert all(isinstance(r["prediction"], str) and r["model"] == "tiny" for r in rows)

    # GPT-score judge through the same OpenAI-compatible server: a random model's replies are unparsed,
    # counted as such; a second run is answered from the cache (the server address is now dead).
    from medsage.eval.cli import main as eval_main

    preds = out / "vqa_rad" / "predictions.jsonl"
    cache = tmp_path / "judge_cache.jsonl"
    judge = [f"eval.judge.base_url={lf_api}", "eval.judge.model=tiny", "eval.judge.max_tokens=8",
             f"eval.judge.cache={cache}"]
    assert eval_main(["judge", str(preds), *judge]) == 0
    summary = json.loads((out / "judge.json").read_text())["vqa_rad"]
    assert summary["n"] == 3 and summary["dimensions"]["reasoning"]["scored"] + \
        summary["dimensions"]["reasoning"]["unparsed"] == 3
    assert len(_lines(cache)) == 3
    dead = [f"eval.judge.base_url=http://127.0.0.1:{_free_port()}/v1", *judge[1:]]
    assert eval_main(["judge", str(preds), *dead]) == 0
    assert len(_lines(cache)) == 3

    from medsage.eval.report.tables import main as report_main

    assert report_main([str(tmp_path / "runs"), "--out", str(tmp_path / "report")]) == 0
    md = (tmp_path / "report" / "table1.md").read_text()
    assert "| tiny-openai |" in md
    assert "tiny-openai / vqa_rad" in (tmp_path / "report" / "table2.md").read_text()
    csv_text = (tmp_path / "report" / "table1.csv").read_text()
    assert csv_text.startswith("section,method,VQA-RAD") and "tiny-openai" in csv_text


@pytest.mark.gpu
def test_vllm_backend_on_gpu(tiny_model_dir, bench_root, tmp_path):
    pytest.importorskip("vllm", reason="vLLM installs in the GPU node's own environment (cluster.envs.eval), not here")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("vLLM offline batch needs a CUDA GPU; none is present")
    out = tmp_path / "runs" / "tiny-vllm"
    summaries = _evaluate(_cfg(tiny_model_dir, bench_root, out, "eval/backend=vllm", "eval.limit=3",
                               "eval.backend.max_model_len=2048"))
    assert all(s["n"] == 3 for s in summaries.values())
