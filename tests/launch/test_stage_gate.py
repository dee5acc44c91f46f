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
