"""The `medsage` command explains itself and stays instant (no engine imports at --help)."""

from __future__ import annotations

import subprocess
import sys

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
