"""The paper recipes synthesise with the stage-wise LLM and verify with a separate VLM endpoint (A.3.4-A.3.5).

- Without an endpoint, `medsage pipeline +experiment=paper_*` stops before any stage (no Ray cluster is
  started) with a message naming the keys and saying the key comes from the environment.
- With one, the synth stage's own command (as the pipeline plans it) runs the LLM synthesizer against one
  scripted loopback server and the verifier against another, toward the SAGE-sft target, with no key in
  the command, the stage folder or the outputs.
- The template path labels its output: report, summary line, and the pipeline report.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import synth_server as H  # tests/helpers (pytest pythonpath)
from omegaconf import OmegaConf

from medsage.data_pipeline.synthesis.prompts import load_prompts
from medsage.records import write_records
from medsage.recipes import compose

PAPER = ["paper_table1", "paper_table3", "paper_table4", "paper_table5"]
PROMPTS = load_prompts("synthesis/prompts.yaml")
SECRET = "sk-paper-recipe-secret-1414"


@pytest.mark.parametrize("experiment", PAPER)
def test_paper_experiment_without_endpoint_stops_before_the_first_stage(experiment, tmp_path, capsys, monkeypatch):
    from medsage.launch.pipeline.app import main

    monkeypatch.chdir(tmp_path)
    # the ??? values are set: without them the run stops earlier, before Hydra writes anything, naming the key
    rows = ["+table3_data=rpa", "+table3_train=sft_rl"] if experiment == "paper_table3" else []  # one job of the sweep
    rc = main([f"+experiment={experiment}", f"run_root={tmp_path}", "eval_data_root=/data/eval", *rows])
    err = capsys.readouterr().err
    assert rc == 2
    for key in ("synthesis.base_url", "synthesis.model", "synthesis.verifier_model"):
        assert key in err, err
    assert "environment" in err and "never from a config" in err and "synthesizer=template" in err
    assert not (tmp_path / "store").exists()  # stopped before the first stage


def _planned_synth(tmp_path, *extra):
    from medsage.launch.pipeline.app import synthesis_endpoint_problem
    from medsage.launch.pipeline.dag import plan_stages

    cfg = compose("pipeline", ["+experiment=paper_table1", "model.path=/models/m", "eval_data_root=/data/eval",
                               f"store={tmp_path / 'store'}", *extra])
    assert synthesis_endpoint_problem(cfg) is None
    stages = plan_stages(OmegaConf.to_container(cfg.stages, resolve=True), tmp_path / "store")
    return next(s for s in stages if s.name == "synth")


def test_paper_synth_stage_runs_the_llm_path_with_a_separate_verifier(demo_samples, tmp_path, monkeypatch):
    from medsage.data_pipeline.synthesis.cli import main

    monkeypatch.setenv("MEDSAGE_PAPER_SYNTH_KEY", SECRET)
    records = demo_samples[:3]
    for s in records:
        s.trajectory = None
    with H.LoopbackServer(H.LvkcScript(PROMPTS)) as synth, H.LoopbackServer(H.LvkcScript(PROMPTS)) as verifier:
        stage = _planned_synth(tmp_path, f"synthesis.base_url={synth.base_url}", "synthesis.model=gpt-4o",
                               "synthesis.api_key_env=MEDSAGE_PAPER_SYNTH_KEY",
                               f"synthesis.verifier_base_url={verifier.base_url}",
                               "synthesis.verifier_model=Qwen/Qwen2.5-VL-72B-Instruct", "sft_rows=5")
        argv = stage.command()
        assert SECRET not in " ".join(argv) and "verify.mode=llm" in argv and "synthesizer=llm" in argv
        write_records(Path(argv[argv.index("--records") + 1]), records)  # what the data stage hands over
        assert main(argv[2:]) == 0
    out = stage.out_dir
    report = json.loads((out / "report.json").read_text())
    assert report["synthesizer"] == "llm" and report["model"] == "gpt-4o" and report["data_note"] is None
    assert report["verifier_model"] == "Qwen/Qwen2.5-VL-72B-Instruct" and report["sft_target"] == 5
    assert report["trajectories_kept"] == 5, report
    assert report["drafts_per_kept_trajectory"] <= 1.3
    # The synthesizer's server wrote the stages; the verifier's server only judged, with its own model name.
    stage_of = {p.system.strip(): k for k, p in PROMPTS.items()}
    asked = {stage_of[b["messages"][0]["content"].strip()] for b in synth.requests}
    assert asked == {"loc", "vis", "know", "con"}
    assert {stage_of[b["messages"][0]["content"].strip()] for b in verifier.requests} == {"verify"}
    assert {b["model"] for b in verifier.requests} == {"Qwen/Qwen2.5-VL-72B-Instruct"}
    assert {b["model"] for b in synth.requests} == {"gpt-4o"}
    assert report["calls_made"] == len(synth.requests) + len(verifier.requests)
    assert {h["authorization"] for h in synth.headers} == {f"Bearer {SECRET}"}  # the key from the environment
    for f in out.rglob("*"):
        if f.is_file():
            assert SECRET not in f.read_text(errors="replace"), f


def test_template_output_says_it_is_not_the_papers_data(demo_samples, tmp_path, capsys):
    from medsage.data_pipeline.synthesis.cli import main
    from medsage.data_pipeline.synthesis.run import TEMPLATE_NOTE

    records = demo_samples[:2]
    for s in records:
        s.trajectory = None
    write_records(tmp_path / "pool.jsonl", records)
    assert main(["run", "--records", str(tmp_path / "pool.jsonl"), "--out", str(tmp_path / "out")]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("synthesis:") and TEMPLATE_NOTE in last
    assert json.loads((tmp_path / "out" / "report.json").read_text())["data_note"] == TEMPLATE_NOTE
    info = json.loads((tmp_path / "out" / "sft" / "dataset_info.json").read_text())
    assert info["sage_sft"]["medsage_note"] == TEMPLATE_NOTE  # the SFT data's own manifest says it too


def test_the_pipeline_report_carries_the_data_note(tmp_path):
    from medsage.data_pipeline.synthesis.run import TEMPLATE_NOTE
    from medsage.launch.pipeline.app import data_notes

    job = tmp_path / "run" / "job"
    job.mkdir(parents=True)
    (job / "pipeline.json").write_text(json.dumps({"stages": {}, "data_note": TEMPLATE_NOTE}))
    assert data_notes(tmp_path / "run") == [TEMPLATE_NOTE]
    from medsage.eval.report.tables import write_report

    written = write_report([], tmp_path / "report", notes=[f"Training data: {TEMPLATE_NOTE}."])
    assert TEMPLATE_NOTE in written["report.md"].read_text()


def test_demo_keeps_the_template_synthesizer_without_endpoint():
    from medsage.launch.pipeline.app import synthesis_endpoint_problem

    cfg = compose("pipeline", ["+experiment=demo"])
    assert cfg.synthesizer == "template" and synthesis_endpoint_problem(cfg) is None
    assert "client.base_url" not in " ".join(map(str, cfg.stages.synth.argv))


@pytest.mark.parametrize("experiment", ["demo", "paper_table1"])
def test_every_stage_that_prompts_gets_the_one_prompt(experiment, tmp_path):
    """data (SFT/RL files), synth (SAGE-sft), rl_data (SAGE-rl) and eval all name `prompt` (recipes/prompt/)."""
    from medsage.launch.pipeline.dag import plan_stages

    extra = [] if experiment == "demo" else ["model.path=/m", "eval_data_root=/e", "synthesis.base_url=http://h/v1",
                                             "synthesis.model=m", "synthesis.verifier_model=v"]
    cfg = compose("pipeline", [f"+experiment={experiment}", "prompt_name=plain", *extra])
    stages = {s.name: s for s in plan_stages(OmegaConf.to_container(cfg.stages, resolve=True), tmp_path)}
    for name in ("data", "synth", "eval"):
        assert "prompt=plain" in stages[name].argv, name
    argv = stages["rl_data"].argv
    assert argv[argv.index("--prompt") + 1] == "plain"
