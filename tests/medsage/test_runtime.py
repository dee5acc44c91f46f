"""medsage.runtime: the one cache root, stage interpreters, version probes and logged subprocesses."""

import os
import subprocess
import sys
import time

import pytest

from medsage import runtime


def test_one_cache_root(monkeypatch, tmp_path):
    monkeypatch.setenv("MEDSAGE_CACHE", str(tmp_path / "c"))
    assert runtime.cache_root() == tmp_path / "c"
    monkeypatch.delenv("MEDSAGE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert runtime.cache_root() == tmp_path / "xdg" / "medsage"


def test_stage_python(tmp_path):
    assert runtime.stage_python(None) == sys.executable
    assert runtime.stage_python("uv:verl==0.9.1") == sys.executable
    with pytest.raises(FileNotFoundError, match="has no"):
        runtime.stage_python(str(tmp_path / "missing"))


def test_package_versions_of_an_interpreter():
    probe = runtime.package_versions(sys.executable, ["pyyaml", "no-such-package-xyz"])
    assert probe["python_version"] == sys.version.split()[0]
    assert probe["packages"]["pyyaml"] and probe["packages"]["no-such-package-xyz"] is None
    with pytest.raises(RuntimeError, match="could not run"):
        runtime.package_versions("/bin/false", ["pyyaml"])


def test_run_logged_appends_and_returns_the_exit_code(tmp_path, capfd):
    log = tmp_path / "train.log"
    assert runtime.run_logged([sys.executable, "-c", "print('one')"], log, header="first") == 0
    assert runtime.run_logged([sys.executable, "-c", "import sys; print('two'); sys.exit(3)"], log, echo=False) == 3
    text = log.read_text()
    assert "===== first" in text and text.index("one") < text.index("two")
    assert "one" in capfd.readouterr().out


def test_a_logged_child_dies_with_its_parent(tmp_path):
    """The parent (a python running run_logged) is killed with SIGKILL; PDEATHSIG ends the child."""
    pid_file = tmp_path / "child.pid"
    child = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    parent = subprocess.Popen([sys.executable, "-c", "import sys; from medsage.runtime import run_logged; "
                               f"run_logged([sys.executable, '-c', {child!r}], {str(tmp_path / 'log')!r})"])
    deadline = time.time() + 30
    while not (pid_file.exists() and pid_file.read_text()) and time.time() < deadline:
        time.sleep(0.1)
    child_pid = int(pid_file.read_text())
    parent.kill()
    parent.wait()
    while time.time() < deadline:
        try:
            os.kill(child_pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    pytest.fail(f"child {child_pid} outlived its killed parent")
