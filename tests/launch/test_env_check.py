"""`medsage env check` probes each stage's interpreter and names the conflict and its fix."""

from __future__ import annotations

import subprocess
import sys


def test_this_environment_satisfies_every_stage(capsys):
    from medsage.launch.env import main

    assert main(["check"]) == 0
    out = capsys.readouterr().out
    for stage in ("data", "sft", "rl", "eval"):
        assert f"[ok] {stage}: {sys.executable}" in out
    assert "llamafactory  0.9.5" in out and "verl          0.9.1" in out


def test_an_empty_environment_is_a_conflict_with_a_fix(tmp_path, capsys):
    from medsage.launch.env import main

    venv = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    assert main(["check", "--stage", "rl", f"cluster.envs.rl={venv}"]) == 1
    out = capsys.readouterr().out
    assert "[CONFLICT] rl" in out
    assert "problem: verl is not installed" in out
    assert f"fix:     uv pip install --python {venv}/bin/python -e '.[rl]'" in out


def test_version_outside_the_pin_is_reported(monkeypatch):
    from medsage.launch import env

    monkeypatch.setitem(env.REQUIREMENTS, "sft", {"transformers": "<=4.0"})
    report = env.check_stage("sft", None)
    assert not report.ok and "does not satisfy <=4.0" in report.problems[0]


def test_missing_environment_folder(tmp_path):
    from medsage.launch.env import check_stage

    report = check_stage("sft", str(tmp_path / "nope"))
    assert not report.ok and "python -m venv" in report.fix


def test_more_than_one_rl_rank_needs_an_rl_environment_of_its_own():
    # This (dev) environment holds LLaMA-Factory's accelerate pin: fine for one RL rank, not for four.
    from importlib.metadata import version

    from packaging.version import Version

    from medsage.launch.env import check_stage

    assert check_stage("rl", None, ranks=1).ok
    four = check_stage("rl", None, ranks=4)
    if Version(version("accelerate")) >= Version("1.15"):
        assert four.ok
    else:
        assert not four.ok and "must not be the SFT one" in four.problems[0] and "[rl]" in four.fix
