"""The pipeline's stage gate and its up-front checks, without Ray: the gate's shell is run as Ray's job
supervisor runs an entrypoint (``sh -c``)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from medsage.launch.pipeline.dag import _Gate, plan_stages, run_stages


def _shell(gate: _Gate, marker) -> subprocess.Popen:
    entry = f"exec {sys.executable} -c \"import pathlib; pathlib.Path({str(marker)!r}).write_text('ran')\""
    return subprocess.Popen(["/bin/sh", "-c", gate.wrap(entry)])


def test_an_open_gate_runs_the_stage_even_if_go_came_before_the_shell(tmp_path):
    gate = _Gate(tmp_path, "sft")
    gate.open()  # written before anyone reads: kept, because the gate holds its end open
    proc = _shell(gate, tmp_path / "ran.txt")
    assert proc.wait(timeout=30) == 0
    gate.close()
    assert (tmp_path / "ran.txt").read_text() == "ran"


def test_a_closed_gate_ends_the_job_without_running_the_stage(tmp_path):
    gate = _Gate(tmp_path, "eval")
    proc = _shell(gate, tmp_path / "ran.txt")
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(timeout=0.5)  # waiting at the gate
    gate.close()  # the pipeline failed or died: EOF
    assert proc.wait(timeout=30) == 75
    assert not (tmp_path / "ran.txt").exists()


def test_a_missing_stage_environment_stops_before_the_first_stage(tmp_path):
    spec = {"data": {"argv": ["data", "run", "{out}"], "env": "data"},
            "sft": {"argv": ["sft", "{data}"], "env": "sft"}}
    stages = plan_stages(spec, tmp_path / "store", {"data": None, "sft": str(tmp_path / "no-such-venv")})
    with pytest.raises(FileNotFoundError, match="no-such-venv"):
        run_stages(stages, None, resume_hint="medsage pipeline")
    assert not (tmp_path / "store").exists()  # not even the data stage started


def test_a_gate_closed_before_the_shell_got_there_ends_it_too(tmp_path):
    gate = _Gate(tmp_path, "rl")
    gate.close()  # the pipeline gave up on the job before Ray had started its shell
    proc = _shell(gate, tmp_path / "ran.txt")
    assert proc.wait(timeout=30) == 75
    assert not (tmp_path / "ran.txt").exists()


def test_a_stage_reading_a_disabled_stage_is_named_with_its_enabled_key(tmp_path):
    from medsage.launch.pipeline.dag import PipelineError

    spec = {"sft": {"argv": ["sft", "{out}"]}, "rl": {"argv": ["rl", "{sft}", "{out}"], "enabled": False},
            "eval": {"argv": ["eval", "{rl}/final_model"]}}
    with pytest.raises(PipelineError, match=r"stage 'eval' refers to \{rl\}, but stage 'rl' is disabled "
                                            r"\(stages\.rl\.enabled=false\)"):
        plan_stages(spec, tmp_path / "store")


def test_evaluating_the_model_of_a_disabled_stage_stops_before_ray_naming_both_keys(tmp_path, capsys, monkeypatch):
    from medsage.launch.pipeline import app

    started = []
    monkeypatch.setattr(app, "_cluster", lambda *a, **k: started.append(a))  # would start Ray
    monkeypatch.chdir(tmp_path)
    rc = app.main(["+experiment=demo", "+stages.rl.enabled=false", "evaluate=rl", f"run_root={tmp_path}"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "evaluate=rl" in err and "model_dirs.rl" in err and "stages.rl.enabled=false" in err, err
    assert "evaluate=sft" in err  # the way out
    assert not started and not (tmp_path / "store").exists()


def test_the_lean_dashboard_patch_is_applied_only_on_a_checked_ray(monkeypatch, capsys):
    import ray
    import ray._private.services as services

    from medsage.launch.pipeline import ray_jobs

    original = services.start_ray_process
    assert ray.__version__.startswith(ray_jobs.LEAN_DASHBOARD_RAY), "update LEAN_DASHBOARD_RAY after checking"
    with ray_jobs._lean():
        assert services.start_ray_process is not original  # trimmed on this Ray
    assert services.start_ray_process is original
    monkeypatch.setattr(ray, "__version__", "9.0.0")
    with ray_jobs._lean():
        assert services.start_ray_process is original  # an unchecked Ray: its own launcher, full dashboard
    assert "Ray 9.0.0 is not one the lean dashboard was checked on" in capsys.readouterr().out


class StartingCluster:
    """An embedded cluster still starting (ready() stays False). A stand-in: a real one is up within seconds,
    so whether a stage met it starting could not be held fixed in a test; tests/launch/test_pipeline.py runs
    the real one."""

    embedded = True

    def ready(self):
        return False

    def client(self):
        raise AssertionError("no stage may wait for the cluster here")


def test_stages_run_here_while_the_cluster_starts_with_a_jobs_result(tmp_path, capsys):
    import json

    spec = {"first": {"argv": ["--help"]}, "second": {"argv": ["no-such-verb", "{first}"]}}
    stages = plan_stages(spec, tmp_path / "store")
    outcomes = run_stages(stages, StartingCluster, resume_hint="medsage pipeline")
    out = capsys.readouterr().out
    assert [o.status for o in outcomes] == ["finished", "failed"]
    first, second = (json.loads((s.out_dir / "stage.json").read_text()) for s in stages)
    assert first["status"] == "finished" and first["exit_code"] == 0 and first["job"].startswith("local-")
    assert "usage" in (stages[0].out_dir / "job.log").read_text()
    assert second["status"] == "failed" and second["exit_code"] == 2
    assert "(here, while the Ray cluster starts)" in out
    assert "second     FAILED: job FAILED, exit status 2" in out and "no-such-verb" in out  # the log's tail
    assert not list(tmp_path.rglob("*.part"))  # each log written whole


def test_only_stages_that_need_no_ray_run_here():
    from medsage.launch.pipeline.local_jobs import may_run_locally

    assert may_run_locally(["data", "run"], None) and may_run_locally(["sft"], "/venvs/sft")
    assert not may_run_locally(["rl", "model.path=x"], None)  # verl joins the pipeline's cluster
    assert not may_run_locally(["eval", "run"], "uv:vllm")  # Ray builds a uv environment


def test_editing_a_selected_recipe_gives_the_stage_and_its_readers_new_folders(tmp_path, monkeypatch):
    import medsage.recipes

    recipes = tmp_path / "recipes"
    (recipes / "sft").mkdir(parents=True)
    (recipes / "sft" / "mine.yaml").write_text("num_train_epochs: 3\n")
    monkeypatch.setattr(medsage.recipes, "recipes_dir", lambda: recipes)
    spec = {"data": {"argv": ["data", "{out}"]}, "sft": {"argv": ["sft", "sft=mine", "model.path=x", "{data}"]},
            "eval": {"argv": ["eval", "{sft}"]}}
    before = {s.name: s.out_dir for s in plan_stages(spec, tmp_path / "store")}
    assert before == {s.name: s.out_dir for s in plan_stages(spec, tmp_path / "store")}  # stable
    (recipes / "sft" / "mine.yaml").write_text("num_train_epochs: 6\n")
    after = {s.name: s.out_dir for s in plan_stages(spec, tmp_path / "store")}
    assert after["data"] == before["data"]  # selects no recipe that changed
    assert after["sft"] != before["sft"] and after["eval"] != before["eval"]
