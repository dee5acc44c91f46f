"""`medsage pipeline` on a real embedded Ray cluster: a sweep, a failing stage, skips, and a killed stage resuming.

The tests share one run root (module fixture) so later ones reuse the stage folders earlier ones made, as a
user's reruns do. Each pipeline run is a subprocess, so a test can kill it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

# The demo chain without the RL stage (its verl run takes minutes; tests/plugins covers it), so evaluation
# reads the SFT model instead of the RL stage's final_model.
BASE = ["+experiment=demo", "+stages.rl.enabled=false", "evaluate=sft"]


def pipeline(root: Path, *args: str, wait: bool = True):
    cmd = [sys.executable, "-m", "medsage.launch.cli", "pipeline", *BASE, f"run_root={root}", *args]
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    if not wait:
        return proc
    out, _ = proc.communicate(timeout=900)
    return proc.returncode, out


def _processes() -> list[str]:
    import psutil

    out = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            out.append(" ".join(p.info["cmdline"] or []))
        except psutil.Error:
            pass
    return out


def stage_dirs(root: Path, name: str) -> list[Path]:
    return sorted((root / "store").glob(f"{name}-*"))


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("pipeline")


def test_sweep_runs_each_stage_once_and_reports_both_jobs(root):
    rc, out = pipeline(root, "-m", "table=table4", "alpha=0.1,0.3")
    assert rc == 0, out
    # Upstream of the swept value everything is shared: one folder per stage, the second job skipped them.
    for name in ("model", "sources", "benchmarks", "data", "synth", "sft"):
        assert len(stage_dirs(root, name)) == 1, name
        assert json.loads((stage_dirs(root, name)[0] / "stage.json").read_text())["status"] == "finished"
    assert len(stage_dirs(root, "eval")) == 2  # alpha reaches evaluation's tags
    # The first stage ran here while the embedded cluster started; evaluation, long after, as a Ray job.
    assert json.loads((stage_dirs(root, "model")[0] / "stage.json").read_text())["job"].startswith("local-")
    assert all(json.loads((d / "stage.json").read_text())["job"].startswith("raysubmit_") for d in stage_dirs(root, "eval"))
    assert out.count("sft        done before, skipped") == 1
    jobs = sorted(p.parent.name for p in (root / "demo").rglob("pipeline.json"))
    assert len(jobs) == 2 and "alpha=0.1" in jobs[0] and "alpha=0.3" in jobs[1]  # Hydra's override_dirname
    job = json.loads(next((root / "demo").rglob("pipeline.json")).read_text())
    assert job["order"] == ["model", "sources", "benchmarks", "data", "synth", "rl_data", "sft", "eval"]
    table4 = (root / "demo" / "report" / "table4.md").read_text()
    assert "α = 0.1" in table4 and "α = 0.3" in table4
    assert (root / "demo" / "report" / "figure5_alpha.png").stat().st_size > 0
    # The SFT stage really trained and exported the tiny model.
    manifest = json.loads((stage_dirs(root, "sft")[0] / "run_001" / "medsage_manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["losses"][-1] < manifest["losses"][0]
    assert (stage_dirs(root, "sft")[0] / "run_001" / "model.safetensors").exists()


def test_a_broken_recipe_fails_with_status_log_tail_and_resume_command(root):
    rc, out = pipeline(root, 'sft_overrides=["sft.learning_rat=0.1"]')
    assert rc == 1
    assert "sft        FAILED: job FAILED, exit status 2" in out
    assert "learning_rat" in out  # the stage's own error, from the log tail
    assert "Fix the cause, then resume with:\n  medsage pipeline" in out
    assert "data       done before, skipped" in out  # upstream stages were not redone


def test_a_rerun_skips_every_finished_stage(root):
    rc, out = pipeline(root, "table=table4", "alpha=0.1")
    assert rc == 0, out
    assert "running" not in out.replace("running (resuming)", "")
    assert out.count("done before, skipped") == 8


def test_a_killed_stage_resumes_in_the_same_folder(root):
    proc = pipeline(root, 'sft_overrides=["sft.num_train_epochs=6"]', wait=False)
    deadline = time.time() + 600
    killed_in = None
    while time.time() < deadline and killed_in is None:
        for folder in stage_dirs(root, "sft"):
            # A complete checkpoint (trainer_state.json is written last): SFT resumes only from those.
            if list(folder.glob("run_001/checkpoint-*/trainer_state.json")) and json.loads(
                    (folder / "stage.json").read_text())["status"] == "running":
                os.killpg(proc.pid, signal.SIGKILL)  # the pipeline, its embedded Ray cluster and the job
                killed_in = folder
                break
        time.sleep(0.5)
    proc.wait()
    assert killed_in is not None, "the SFT stage never reached its first checkpoint"
    time.sleep(3)
    # Nothing of this pipeline lives on: no stage command or trainer (their command lines name the store)
    # and no raylet of the embedded cluster.
    assert not [p for p in _processes() if str(root) in p or "raylet" in p], "the kill left processes behind"
    rc, out = pipeline(root, 'sft_overrides=["sft.num_train_epochs=6"]')
    assert rc == 0, out
    assert f"sft        running (resuming)" in out
    assert json.loads((killed_in / "stage.json").read_text())["status"] == "finished"
    manifest = json.loads((killed_in / "run_001" / "medsage_manifest.json").read_text())
    assert any(a.get("resumed_from") for a in manifest["attempts"])  # SFT went on from its checkpoint


def test_a_run_root_hydra_cannot_read_unquoted_runs_its_stages_and_is_held(tmp_path_factory):
    # ü, quotes and `;` in run_root: the data stage reads three earlier stages' folders through Hydra overrides.
    # A second pipeline on the same run_root while the first runs stops at once.
    from medsage.recipes import hydra_value

    root = tmp_path_factory.mktemp("pipeline") / "ünï 'q\";x"
    root.mkdir()
    off = [f"+stages.{s}.enabled=false" for s in ("synth", "rl_data", "sft", "eval")]
    cmd = [sys.executable, "-m", "medsage.launch.cli", "pipeline", *BASE, f"run_root={hydra_value(str(root))}", *off]
    first = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
    deadline = time.time() + 300
    while not list((root / "store").glob("*/stage.json")) and first.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    second = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300)
    out, _ = first.communicate(timeout=600)
    assert second.returncode == 2 and "in use by another pipeline" in second.stderr, second.stderr
    assert "Traceback" not in second.stderr
    assert first.returncode == 0, out
    (data,) = stage_dirs(root, "data")
    assert json.loads((data / "stage.json").read_text())["status"] == "finished"
    summary = json.loads((data / "summary.json").read_text())
    assert summary["sources"] and all(s["kept"] for s in summary["sources"].values()), summary
