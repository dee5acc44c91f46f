"""`medsage env setup`: each GPU stage's environment built from its lock with uv, named in the cluster recipe.

Fast: the cluster recipe's `envs:` block is rewritten in place (comments and other lines kept), and bad
input (stage, lock, cluster, folder, uv) fails with a message before anything is built.

Slow, the dress rehearsal (CPU, this machine): the RL and SFT environments are built from locks/ into fresh
folders by `medsage env setup`, then each is used through its own interpreter. RL: `medsage rl` composes the
paper's GPU recipe (Qwen2.5-VL-7B recipe on the tiny model, a100_4x) and verl's own `validate_config` passes;
vLLM imports, at the version verl 0.9.1's `vllm` extra declares. SFT: LLaMA-Factory's own `get_train_args`
accepts the paper recipe's generated args with the DeepSpeed ZeRO-2 config. What needs a GPU (vLLM's engine,
DeepSpeed on NCCL) is the last test, skipped here with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from medsage.launch import env_locks, env_setup
from medsage.launch.cli import main as cli
from medsage.recipes import recipes_dir

ENVS = {"sft": "/opt/envs/sft", "rl": "/opt/envs/rl", "eval": "/opt/envs/eval"}


# --------------------------------------------------------------------------------------------
# the cluster recipe
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("recipe", sorted((recipes_dir() / "cluster").glob("*.yaml")), ids=lambda p: p.stem)
def test_envs_are_set_in_place_keeping_comments_and_every_other_line(recipe):
    before = recipe.read_text()
    after = env_setup.set_cluster_envs(before, ENVS)
    old, new = before.splitlines(), after.splitlines()
    if "envs" not in yaml.safe_load(before):  # derived through Hydra defaults: its own block, appended
        assert new[:len(old)] == old and yaml.safe_load(after)["envs"] == ENVS
        assert yaml.safe_load(before)["defaults"][-1] == "_self_"  # so the recipe's own envs win over its base's
        return
    assert len(old) == len(new)
    changed = [(a, b) for a, b in zip(old, new) if a != b]
    assert len(changed) == len(ENVS)
    for a, b in changed:
        stage = b.split(":")[0].strip()
        assert b.startswith(f"  {stage}: {ENVS[stage]}")
        if "#" in a:  # the comment is kept, in its column when the path leaves room
            assert b[b.index("#"):] == a[a.index("#"):]
    loaded = yaml.safe_load(after)
    assert loaded["envs"] == {**yaml.safe_load(before)["envs"], **ENVS}
    assert {k: v for k, v in loaded.items() if k != "envs"} == {k: v for k, v in yaml.safe_load(before).items() if k != "envs"}


def test_a_path_that_needs_quotes_and_a_stage_the_block_lacks():
    text = "name: x\nenvs:             # per stage\n  data: null       # here\n  sft: null        # LLaMA-Factory\nnnodes: 1\n"
    out = env_setup.set_cluster_envs(text, {"sft": "/opt/my envs/sft #1", "rl": "/opt/rl"})
    assert yaml.safe_load(out) == {"name": "x", "envs": {"data": None, "sft": "/opt/my envs/sft #1", "rl": "/opt/rl"},
                                   "nnodes": 1}
    assert "# LLaMA-Factory" in out and out.endswith("  rl: /opt/rl\nnnodes: 1\n")


def test_a_flow_style_envs_is_refused_and_a_recipe_without_envs_gets_a_block():
    with pytest.raises(env_setup.EnvSetupError, match="not a block mapping this edit can write into"):
        env_setup.set_cluster_envs("name: x\nenvs: {sft: null}\n", ENVS)
    out = env_setup.set_cluster_envs("defaults:\n  - a100_1x\n  - _self_\nname: y", {"rl": "/opt/envs/rl"})
    assert yaml.safe_load(out) == {"defaults": ["a100_1x", "_self_"], "name": "y", "envs": {"rl": "/opt/envs/rl"}}


# --------------------------------------------------------------------------------------------
# bad input fails before anything is built
# --------------------------------------------------------------------------------------------
def _setup(tmp_path, capsys, *args) -> tuple[int, str]:
    rc = cli(["env", "setup", "--prefix", str(tmp_path / "envs"), *args])
    err = capsys.readouterr().err
    assert not (tmp_path / "envs").exists()  # nothing was built
    return rc, err


def test_an_unknown_stage(tmp_path, capsys):
    rc, err = _setup(tmp_path, capsys, "--stage", "rl", "--stage", "data")
    assert rc == 2 and "unknown stage 'data'" in err and "sft, rl, eval" in err


def test_a_missing_lock_says_how_to_make_it(tmp_path, capsys, monkeypatch):
    (tmp_path / "checkout").mkdir()
    monkeypatch.setattr(env_locks, "checkout_root", lambda: tmp_path / "checkout")  # a checkout without locks/
    rc, err = _setup(tmp_path, capsys, "--stage", "rl")
    assert rc == 2 and f"{tmp_path / 'checkout' / 'locks' / 'rl.txt'} is missing" in err
    assert "python -m medsage.launch.env_locks --stage rl" in err


def test_an_unknown_cluster_lists_the_recipes(tmp_path, capsys):
    rc, err = _setup(tmp_path, capsys, "--cluster", "a100_9x")
    assert rc == 2 and "--cluster a100_9x: no recipe" in err and "a100_4x" in err


def test_a_folder_that_is_not_an_environment(tmp_path, capsys):
    (tmp_path / "data" / "rl").mkdir(parents=True)
    (tmp_path / "data" / "rl" / "scans.txt").write_text("someone's files")
    rc = cli(["env", "setup", "--stage", "rl", "--prefix", str(tmp_path / "data")])
    assert rc == 2 and "exists and is not a virtual environment" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "data" / "rl").iterdir()] == ["scans.txt"]


def test_no_uv(tmp_path, capsys, monkeypatch):
    # No uv anywhere: not beside the interpreter, not importable, not on PATH.
    monkeypatch.setattr(sys, "executable", str(tmp_path / "bin" / "python"))
    monkeypatch.setitem(sys.modules, "uv", None)
    monkeypatch.setenv("PATH", str(tmp_path))
    rc, err = _setup(tmp_path, capsys, "--stage", "rl")
    assert rc == 2 and "uv is not installed" in err and "pip install uv" in err


# --------------------------------------------------------------------------------------------
# the dress rehearsal
# --------------------------------------------------------------------------------------------
def _disk(env: Path) -> tuple[int, int]:
    """(bytes only this environment holds, bytes hardlinked with another copy, i.e. uv's cache)."""
    own = linked = 0
    for folder, _, files in os.walk(env):
        for name in files:
            st = os.lstat(os.path.join(folder, name))
            if os.path.isfile(os.path.join(folder, name)) and not os.path.islink(os.path.join(folder, name)):
                if st.st_nlink > 1:
                    linked += st.st_size
                else:
                    own += st.st_size
    return own, linked


def _build(stage: str, prefix: Path, *extra: str) -> tuple[Path, str]:
    """``medsage env setup`` for one stage: the environment and a line saying its time and disk use."""
    start = time.perf_counter()
    assert cli(["env", "setup", "--stage", stage, "--prefix", str(prefix), *extra]) == 0
    seconds = time.perf_counter() - start
    env = prefix / stage
    own, linked = _disk(env)
    said = (f"\n[rehearsal] {stage}: built in {seconds:.1f} s; {own / 1e6:.0f} MB of its own, "
            f"{linked / 1e9:.2f} GB hardlinked from uv's cache")
    cache = Path(subprocess.run([env_locks.find_uv(), "cache", "dir"], capture_output=True, text=True,
                                check=True).stdout.strip())
    if cache.is_dir() and cache.stat().st_dev == env.stat().st_dev:  # uv hardlinks only within one file system
        assert own < 0.05 * (own + linked), f"{env}: {own} of {own + linked} bytes are copies, not links"
    return env, said


def _in_env(env: Path, cmd: list[str], cwd: Path, **environ: str) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, check=False,
                          env={**os.environ, "PYTHONNOUSERSITE": "1", **environ})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{cmd[0]} in {env} failed:\n{out[-6000:]}"
    return out


def _probed(out: str) -> dict:
    """The JSON a probe printed after ``PROBE `` (engines log around it)."""
    return json.loads(next(line[6:] for line in out.splitlines() if line.startswith("PROBE ")))


_VERL_PINS = """
import json, vllm
from importlib.metadata import requires, version
from packaging.requirements import Requirement
pins = {}
for line in requires("verl"):
    req = Requirement(line)
    if req.marker is not None and req.marker.evaluate({"extra": "vllm"}) and not req.marker.evaluate({"extra": ""}):
        pins[req.name] = str(req.specifier)
print("PROBE " + json.dumps({"pins": pins, "installed": {n: version(n) for n in pins if n != "verl"}, "vllm": vllm.__version__}))
"""


@pytest.mark.slow
def test_rl_environment_from_its_lock_validates_the_gpu_recipe(tmp_path, tiny_model_dir, monkeypatch, capsys):
    from rl_run import write_rl_parquet  # tests/helpers

    recipes = shutil.copytree(recipes_dir(), tmp_path / "recipes")  # --cluster writes into a copy, not the checkout
    monkeypatch.setattr("medsage.recipes.recipes_dir", lambda: recipes)
    env, said = _build("rl", tmp_path / "envs", "--cluster", "a100_4x")
    out = capsys.readouterr().out
    print(said)
    assert "next: medsage env check cluster=a100_4x" in out
    assert yaml.safe_load((recipes / "cluster" / "a100_4x.yaml").read_text())["envs"]["rl"] == str(env)

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    start = time.perf_counter()
    log = _in_env(env, [str(env / "bin" / "medsage"), "rl", "model=qwen2_5_vl_7b", f"model.path={tiny_model_dir}",
                        "cluster=a100_4x", f"train_files={write_rl_parquet(tmp_path, repeat=2)}", f"output_dir={tmp_path / 'run'}",
                        "dry_run=true"], cwd)
    print(f"[rehearsal] rl: `medsage rl ... dry_run=true` in the RL environment: {time.perf_counter() - start:.1f} s")
    assert "[validate_config] All configuration checks passed successfully!" in log  # verl's own check
    assert "verl config validated (medsage_self_check; medsage.plugins.self_check.loop.SelfCheckAgentLoop)" in log
    assert "not launched: dry_run=true" in log and f"{env}/bin/python -m verl.trainer.main_ppo" in log
    assert "actor_rollout_ref.rollout.name=vllm" in log and "trainer.n_gpus_per_node=4" in log

    # vLLM imports (no GPU needed) and the environment is verl's tested set: vllm, torch, transformers as its
    # `vllm` extra pins them.
    probe = _probed(_in_env(env, [str(env / "bin" / "python"), "-c", _VERL_PINS], cwd))
    assert probe["pins"]["vllm"].startswith("==") and probe["vllm"] == probe["pins"]["vllm"][2:]
    for name in ("torch", "transformers", "vllm"):
        assert f"=={probe['installed'][name]}" == probe["pins"][name], (name, probe)


_SFT_PROBE = """
import json, sys
from medsage.launch.sft import run_sft
from llamafactory.hparams import get_train_args

args = run_sft(sys.argv[1:], dry_run=True, quiet=True).args  # the paper recipe's generated LLaMA-Factory args
model, data, training, finetuning, generating = get_train_args({**args, "use_cpu": True})
import deepspeed
ds = training.hf_deepspeed_config.config  # DeepSpeed's config as the HF Trainer hands it to deepspeed.initialize
print("PROBE " + json.dumps({"generated": args, "deepspeed": training.deepspeed, "parallel_mode": training.parallel_mode.value,
                  "bf16": training.bf16, "deepspeed_version": deepspeed.__version__, "zero": ds["zero_optimization"]["stage"],
                  "micro": ds["train_micro_batch_size_per_gpu"], "accum": ds["gradient_accumulation_steps"],
                  "ds_bf16": ds["bf16"]["enabled"]}))
"""


@pytest.mark.slow
def test_sft_environment_from_its_lock_parses_the_paper_recipe_with_deepspeed(tmp_path, tiny_model_dir, sft_dataset):
    env, said = _build("sft", tmp_path / "envs")
    print(said)
    data_dir, dataset = sft_dataset
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # On CPU LLaMA-Factory's parser needs two things a GPU launch has: the variables of a (one-process) torchrun
    # launch, since it accepts DeepSpeed only in a distributed launch; and use_cpu, since transformers refuses bf16
    # without a bf16 GPU (it also keeps DeepSpeed's CPU-only communication op, a C++ build of minutes, out of it).
    torchrun = {"LOCAL_RANK": "0", "RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1",
                "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "MEDSAGE_CACHE": str(tmp_path / "cache")}
    start = time.perf_counter()
    out = _in_env(env, [str(env / "bin" / "python"), "-c", _SFT_PROBE, "sft=lvkc_full", "model=qwen2_5_vl_7b",
                        f"model.path={tiny_model_dir}", "cluster=a100_4x", f"data.dataset_dir={data_dir}",
                        f"data.dataset={dataset}", f"output.dir={tmp_path / 'sft'}"], tmp_path, **torchrun)
    print(f"[rehearsal] sft: LLaMA-Factory's get_train_args in the SFT environment: {time.perf_counter() - start:.1f} s")
    got = _probed(out)
    zero2 = str(recipes_dir() / "deepspeed" / "zero2.json")
    assert got["generated"]["deepspeed"] == zero2 and got["generated"]["bf16"] is True  # the GPU args, unchanged
    assert got["deepspeed"] == zero2 and got["zero"] == 2 and got["parallel_mode"] == "distributed"
    assert (got["micro"], got["accum"], got["bf16"], got["ds_bf16"]) == (4, 16, True, True)  # "auto" filled in
    assert got["deepspeed_version"] == env_locks.read_pins(env_locks.lock_path("sft"))["deepspeed"]


# --------------------------------------------------------------------------------------------
# what only a GPU node can show
# --------------------------------------------------------------------------------------------
def _no_gpu() -> str | None:
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return ("no CUDA GPU (and the locks' CUDA 13 torch needs driver >= 580): vLLM's engine and DeepSpeed's "
                "NCCL start-up, what the locked environments add over the CPU rehearsal, run on CUDA only")
    return None


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(_no_gpu() is not None, reason=_no_gpu() or "")
def test_locked_environments_train_on_a_gpu(tmp_path, tiny_model_dir, tiny_sft_overrides, sft_schema_cache):
    from medsage.launch.sft import run_sft
    from medsage.plugins.engines.verl import console_step_metrics
    from rl_run import run_rl, write_rl_parquet

    prefix = tmp_path / "envs"
    assert cli(["env", "setup", "--stage", "sft", "--stage", "rl", "--prefix", str(prefix)]) == 0
    # SFT: DeepSpeed ZeRO-2 through torchrun, in the SFT environment.
    result = run_sft(tiny_sft_overrides("cluster=a100_1x", "sft.bf16=true", "sft.deepspeed=zero2",
                                        f"cluster.envs.sft={prefix / 'sft'}"), stream=False)
    assert result.status == "finished" and result.manifest["llamafactory_args"]["deepspeed"].endswith("zero2.json")
    # RL: two R-GRPO steps with vLLM rollouts, in the RL environment.
    _, rc, log = run_rl(tmp_path, tiny_model_dir, write_rl_parquet(tmp_path), "rl.gpu_memory_utilization=0.3",
                        f"cluster.envs.rl={prefix / 'rl'}", cluster="a100_1x",
                        extra=["actor_rollout_ref.model.use_remove_padding=false",
                               "actor_rollout_ref.rollout.enforce_eager=true"])
    assert rc == 0, log[-6000:]
    assert sorted(console_step_metrics(log)) == [1, 2]
