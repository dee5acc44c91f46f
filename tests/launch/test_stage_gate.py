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
