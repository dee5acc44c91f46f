"""The miniature through the real pipeline at a small budget: generated lesion task -> data ->
template synthesis with retry rows -> the small model, its vision tower warmed up -> LLaMA-Factory SFT ->
evaluation with and without the image. RL is left out here (tests/plugins/test_rl_cpu_train.py trains it);
bench/bench_learning.py runs the full budget, RL included, and prints the table.

What it asserts is what a wiring regression breaks: the model learns to read the image (yes/no well above
chance with it, near chance with blank images), the retry rows reached SFT, every held-out item gets a verdict
of its kind, and the <LOC> box is scored against the truth. Images that never reach the model, a prompt that
differs between SFT and evaluation, or a warm-up that trains on nothing all pull yes/no back to chance.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from medsage.eval import layout as eval_layout
from medsage.launch import layout

pytestmark = pytest.mark.slow


def test_miniature_pipeline_learns_to_read_the_image(tmp_path):
    cmd = [sys.executable, "-m", "medsage.launch.cli", "pipeline", "+experiment=miniature", f"run_root={tmp_path}",
           "task.eval=32", "+stages.rl.enabled=false", "evaluate=sft", "model.build.vision_warmup_steps=800",
           'sft_overrides=["sft.num_train_epochs=4"]']
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]

    stages = json.loads((tmp_path / "miniature" / layout.PIPELINE).read_text())["stages"]
    synth = json.loads((Path(stages["synth"]["out_dir"]) / "report.json").read_text())
    assert synth["retry"]["rows"] > 0  # retry examples were written for SFT
    warmup = json.loads((Path(stages["model"]["out_dir"]) / "vision_warmup.json").read_text())
    assert warmup["eval_probe_accuracy"]["pooled"]["any box"] > 0.7, warmup  # the tower sees held-out lesions

    run = json.loads((Path(stages["eval"]["out_dir"]) / eval_layout.RUN).read_text())
    sighted, blind = run["summaries"]["records"], run["blind_summaries"]["records"]
    assert sighted["n"] == blind["n"] > 0
    assert set(sighted["by_kind"]) == {"presence", "quadrant", "choice", "count"}
    assert sighted["strict_format"] is not None
    assert sighted["loc_iou_n"] > 0 and sighted["loc_iou"] is not None
    assert run["tags"]["task"] == "miniature"
    second = sighted["self_correction"]  # the answer-key retry: every wrong first answer gets its second attempt
    assert second["trigger"] == "answer_key" and second["n"] == sighted["n"] and second["acc_t1"] == sighted["accuracy"]
    assert second["retried"] + second["wrong_not_retried"] == sighted["n"] - sighted["correct"]
    assert second["delta_c_to_i"] == 0 and second["acc_t2"] >= second["acc_t1"]
    presence, blind_presence = sighted["by_kind"]["presence"], blind["by_kind"]["presence"]
    assert presence["accuracy"] >= 75, sighted["by_kind"]  # chance is 50: the model reads the image
    assert blind_presence["accuracy"] <= 65, blind["by_kind"]  # and without it, it guesses
