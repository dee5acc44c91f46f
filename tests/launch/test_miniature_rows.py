"""The miniature evaluates the SFT model beside the RL model (the SFT row of its Table 5), so a run shows what RL
changed; the RL training's rates tag the RL model's evaluation only; the demo says what changed, even nothing."""

from __future__ import annotations

from omegaconf import OmegaConf

from medsage.launch.demo.run import _changes, _scores
from medsage.recipes import compose


def _planned(tmp_path, *extra):
    from medsage.launch.pipeline.dag import plan_stages

    cfg = compose("pipeline", ["+experiment=miniature", f"store={tmp_path / 'store'}", *extra])
    return {s.name: s for s in plan_stages(OmegaConf.to_container(cfg.stages, resolve=True), tmp_path / "store")}


def test_the_sft_model_is_evaluated_beside_the_rl_model(tmp_path):
    stages = _planned(tmp_path)
    sft_eval, rl_eval = stages["eval_sft"].command(), stages["eval"].command()
    assert f"model.path={stages['sft'].out_dir}/run_001" in sft_eval
    assert any(a.startswith("model.path=") and str(stages["rl"].out_dir) in a for a in rl_eval)
    assert "++eval.tags.row=SFT" in sft_eval and "++eval.tags.row='SFT + RL + Self'" in rl_eval
    assert [a for a in rl_eval if "train_metrics" in a] == [f"++eval.tags.train_metrics={stages['rl'].out_dir}/metrics.jsonl"]
    assert not [a for a in sft_eval if "train_metrics" in a]  # SFT's row never shows the RL training's rates
    assert "eval.retry=answer_key" in sft_eval and "eval.retry=answer_key" in rl_eval
    assert "eval.retry=answer_key" not in stages["eval_blind"].command()
    assert stages["rl"] not in stages["eval_sft"].after  # it does not wait for RL

    sft_only = _planned(tmp_path, "+table5_row=sft")  # the SFT model is the evaluated one: no second copy
    assert "eval_sft" not in sft_only and "rl" not in sft_only


def test_the_demo_says_what_rl_changed():
    def summary(presence, overall):
        return {"records": {"accuracy": overall, "by_kind": {"presence": {"accuracy": presence}}}}

    assert _changes(summary(90.0, 70.0), summary(95.0, 71.5)) == "presence yes/no +5.0, overall +1.5 points"
    same = _changes(summary(90.0, 70.0), summary(90.0, 70.0))
    assert same.endswith("(no accuracy moved)")


def test_the_demo_names_each_kind_beside_its_chance():
    from medsage.eval.report.miniature import CHANCE, KIND_COLUMNS

    records = {"accuracy": 70.0, "loc_iou": 0.5, "strict_format": 99.0,
               "by_kind": {"presence": {"accuracy": 90.0}, "quadrant": {"accuracy": 40.0}}}
    line = _scores({"records": records}, "miniature")
    assert line.startswith(f"{KIND_COLUMNS['presence']} 90% (chance {CHANCE['presence']:g}%); "
                           f"{KIND_COLUMNS['quadrant']} 40% (chance {CHANCE['quadrant']:g}%); ")
    assert line.endswith("<LOC> IoU 0.50; strict format 99%")
