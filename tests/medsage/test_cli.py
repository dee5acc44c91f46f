"""The `medsage` command explains itself and stays instant (no engine imports at --help)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from medsage.launch.cli import main


def test_help_lists_available_stages(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for verb in ("demo", "tiny-model"):
        assert f"  {verb}" in out


def test_unknown_command_suggests(capsys):
    assert main(["tiny-mdoel"]) == 2
    assert "Did you mean 'tiny-model'?" in capsys.readouterr().err


def test_help_imports_no_engine():
    code = ("import sys; from medsage.launch.cli import main; main(['--help']); "
            "heavy = [m for m in ('torch', 'transformers', 'ray', 'llamafactory', 'verl') if m in sys.modules]; "
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out


def test_tiny_model_help_explains_itself():
    out = subprocess.run([sys.executable, "-m", "medsage.launch.cli", "tiny-model", "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "usage: medsage tiny-model" in out and "out_dir" in out and "--seed" in out


VERBS_WITH_OVERRIDES = [["sft"], ["rl"], ["pipeline"], ["env"], ["demo"], ["eval", "run"], ["eval", "judge"],
                        ["data", "run"], ["data", "synth", "run"], ["scorer", "train"]]


@pytest.mark.parametrize("verb", VERBS_WITH_OVERRIDES, ids=" ".join)
def test_every_verb_help_reads_the_same(verb, capsys):
    """One tree: each verb's --help is argparse's, with the verb's prog and the same overrides argument."""
    from medsage.launch.cli import parse

    with pytest.raises(SystemExit) as stop:
        parse(verb[0], [*verb[1:], "--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps to the terminal width
    assert stop.value.code == 0
    assert out.startswith(f"usage: medsage {' '.join(verb)} ") and "[override ...]" in out
    assert "Hydra overrides (key=value, group=option, +key=value), e.g." in out


def test_a_verb_with_a_bad_flag_fails_with_its_usage(capsys):
    assert subprocess.run([sys.executable, "-m", "medsage.launch.cli", "rl", "--no-such-flag"],
                          capture_output=True, text=True).returncode == 2
    from medsage.launch.cli import parse

    with pytest.raises(SystemExit):
        parse("eval", ["score", "p.jsonl", "--data", "no-equals-sign"])
    assert "expected NAME=VALUE" in capsys.readouterr().err
