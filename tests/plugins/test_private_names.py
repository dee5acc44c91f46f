"""medsage inside verl: the private names it reaches are the ones listed, on the releases checked, and a verl run
that does not select medsage's estimator or agent loop is verl's own."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("verl")
torch = pytest.importorskip("torch")

from medsage.plugins.engines import private_names  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("engine", ["verl", "ray"])
def test_every_private_name_is_there_on_a_checked_release(engine):
    installed, checked, found = private_names.check(engine)
    assert installed in checked and not found, (
        f"{engine} {installed} (medsage's private names were checked on {', '.join(checked)}); "
        + ("; ".join(found) if found else "every listed name is present: re-read each and add the version"))


def test_a_missing_or_changed_name_is_named():
    from medsage.plugins.engines.private_names import Reached, problems

    found = problems((Reached("verl.trainer.ppo.ray_trainer:no_such_function", "calls", "x.py"),
                      Reached("verl.trainer.ppo.ray_trainer:compute_advantage", "wraps", "y.py", ("batch",)),
                      Reached("verl.trainer.ppo.ray_trainer:compute_advantage", "reads", "z.py", in_source="no such")))
    assert len(found) == 3
    assert "no_such_function" in found[0] and "missing" in found[0]
    assert "parameters changed" in found[1] and "y.py" in found[1]
    assert "no longer holds 'no such'" in found[2]


def test_every_private_ray_module_medsage_imports_is_listed():
    listed = {r.target.partition(":")[0] for r in private_names.RAY}
    used = set()
    for path in [*REPO.glob("plugins/**/*.py"), *REPO.glob("launch/**/*.py"), *REPO.glob("medsage/**/*.py"),
                 *REPO.glob("eval/**/*.py"), *REPO.glob("data_pipeline/**/*.py")]:
        text = path.read_text()
        used |= set(re.findall(r"\bray\._private\.\w+", text))
        used |= {f"ray._private.{m}" for m in re.findall(r"from ray\._private import (\w+)", text)}
    assert used and used <= listed, sorted(used - listed)


PROBE = r"""
import json, sys

def probe(mode):
    import numpy as np
    import torch
    from verl import DataProto
    from verl.trainer.config import AlgoConfig
    from verl.trainer.ppo import ray_trainer
    from verl.workers.engine.base import EngineRegistry

    if mode == "hooks":  # a medsage run: its agent-loop manager installs the trainer hooks
        from medsage.plugins.self_check.verl_plugin import install_trainer_hooks
        install_trainer_hooks()
    g = torch.Generator().manual_seed(0)
    mask = (torch.rand(8, 6, generator=g) > 0.2).long()
    rewards = torch.zeros(8, 6)
    rewards[torch.arange(8), 5] = torch.rand(8, generator=g).round(decimals=3)
    data = DataProto.from_dict(tensors={"token_level_rewards": rewards, "response_mask": mask},
                               non_tensors={"uid": np.array(list("aaaabbbb"), dtype=object)})
    out = ray_trainer.compute_advantage(data, adv_estimator="grpo", config=AlgoConfig(adv_estimator="grpo"))
    fns = [ray_trainer.compute_advantage, ray_trainer.compute_data_metrics, ray_trainer.left_right_2_no_padding,
           ray_trainer.RayPPOTrainer._log_rollout_data]
    return {"advantages": out.batch["advantages"].tolist(), "returns": out.batch["returns"].tolist(),
            "defined_in": [f.__code__.co_filename.rsplit("/", 3)[-3:] for f in fns],
            "engines": sorted(str(k) for k in EngineRegistry._engines.get("language_model", {}).get("fsdp2", {}))}

if __name__ == "__main__":
    print(json.dumps(probe(sys.argv[1])))
"""


def _probe(script: Path, mode: str, plugins: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDSAGE_") and k != "VERL_USE_EXTERNAL_MODULES"}
    env["VERL_USE_EXTERNAL_PLUGINS"] = plugins
    proc = subprocess.run([sys.executable, str(script), mode], capture_output=True, text=True, env=env, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_plain_verl_grpo_run_is_verls_own_with_medsage_installed(tmp_path):
    """Same batch, same GRPO advantages, with verl loading medsage's plugin and without it (verl's own switch
    VERL_USE_EXTERNAL_PLUGINS=none); the plugin alone rebinds none of the trainer's functions and registers no
    engine; even with medsage's trainer hooks installed, a batch without medsage's columns gets verl's numbers."""
    import runpy

    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    without = _probe(script, "plain", "none")  # verl's own switch: no plugin loaded
    loaded = _probe(script, "plain", "auto")
    assert loaded["defined_in"] == without["defined_in"]  # the trainer's functions are verl's
    assert loaded["engines"] == without["engines"]  # no engine of medsage's shadows verl's
    assert loaded["advantages"] == without["advantages"] and loaded["returns"] == without["returns"]
    hooked = runpy.run_path(str(script))["probe"]("hooks")  # this process stands for a medsage run, hooks installed
    assert any(path[-1] == "verl_plugin.py" for path in hooked["defined_in"])  # the hooks exist, in medsage's runs
    assert hooked["advantages"] == without["advantages"] and hooked["returns"] == without["returns"]
