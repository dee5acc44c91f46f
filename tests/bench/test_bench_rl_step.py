"""bench/bench_rl_step.py's start-up CPU accounting: every process of a command's tree, labelled as a reader
of ``ps`` would name it, and its CPU counted."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("psutil")

def test_processes_are_labelled_by_ray_title_module_or_script(bench):
    label = bench.ProcessCPU.label
    assert label(["ray::TaskRunner.run"]) == "ray::TaskRunner"
    assert label(["ray::HFGenerationServer"]) == "ray::HFGenerationServer"
    assert label(["/v/bin/python", "-m", "verl.trainer.main_ppo", "data.x=1"]) == "verl.trainer.main_ppo"
    assert label(["/v/bin/python", "-m", "medsage.launch.cli", "rl", "model=tiny"]) == "medsage.launch.cli rl"
    assert label(["/v/bin/python", "-u", "/v/ray/_private/log_monitor.py", "--x"]) == "log_monitor.py"


def test_the_cpu_of_a_whole_process_tree_is_counted(bench):
    # a parent that burns ~1 s of CPU and starts a child that burns ~1 s more, then both wait to be sampled
    burn = "import time; t = time.process_time(); exec('while time.process_time() - t < 1.0: pass')"
    child = f"{burn}; time.sleep(2)"
    parent = f"import subprocess, sys; c = subprocess.Popen([sys.executable, '-c', {child!r}]); {burn}; c.wait()"
    proc = subprocess.Popen([sys.executable, "-c", parent])
    cpu = bench.ProcessCPU(proc.pid, every=0.1)
    proc.wait()
    cpu.stop()
    seen = cpu.by_process()
    assert len(seen) == 2 and all(v >= 0.9 for v in seen.values()), seen
    assert sum(seen.values()) < 4.0, seen
