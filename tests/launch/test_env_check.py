"""`medsage env check` probes each stage's interpreter and names every problem with the fix that works.

The probe is real throughout (a subprocess of the stage's interpreter): this dev environment has no GPU, no
vLLM, no DeepSpeed and no flash-attn, and the tiny virtualenvs are built in tmp_path. Facts this machine
cannot show (an old driver, a node with fewer GPUs) go to ``preflight.check``, a pure function of the facts.
"""

from __future__ import annotations

import re
import sys

from standin_env import bare_venv

from medsage.launch import preflight
from medsage.launch.env import main


def _sections(out: str) -> dict[str, str]:
    """env check's output per stage: {stage: its lines}."""
    parts = re.split(r"^(?=\[(?:ok|FAIL)\] )", out, flags=re.MULTILINE)
    return {re.match(r"\[\w+\] (\w+):", p).group(1): p for p in parts if p.strip()}


def test_this_environment_satisfies_every_stage_on_cpu(capsys):
    assert main(["check"]) == 0
    out = capsys.readouterr().out
    for stage in ("data", "sft", "rl", "eval"):
        assert f"[ok] {stage}: {sys.executable}" in out
    assert "llamafactory  0.9.5" in out and "verl          0.9.1" in out


def test_on_a_gpu_cluster_this_environment_fails_each_gpu_stage_with_its_fixes(capsys):
    # The real probe of this interpreter: torch 2.11 (a CUDA 13 build) sees no device; no vLLM, no DeepSpeed.
    assert main(["check", "cluster=a100_4x"]) == 1
    by_stage = _sections(capsys.readouterr().out)
    assert by_stage["data"].startswith("[ok] data")
    for stage in ("sft", "rl", "eval"):
        assert by_stage[stage].startswith(f"[FAIL] {stage}")
        assert "problem: no CUDA device is visible to torch" in by_stage[stage]
        assert "torch built for CUDA 13.0" in by_stage[stage]
        assert "pip install 'medsage" not in by_stage[stage]
    assert "problem: vllm is not installed, and verl's rollout runs on vLLM" in by_stage["rl"]
    assert "problem: deepspeed is not installed, and the SFT recipe trains with DeepSpeed (sft.deepspeed: zero2)" \
        in by_stage["sft"]
    # every stage runs in this one interpreter (no cluster.envs): each fix builds the stage an environment of its own
    assert "fix:     medsage env setup --stage rl --prefix envs, then set cluster.envs.rl=envs/rl" in by_stage["rl"]
    assert "fix:     medsage env setup --stage sft --prefix envs, then set cluster.envs.sft=envs/sft" in by_stage["sft"]
    assert "vllm" not in by_stage["eval"].split("problem:", 1)[1]  # the hf backend needs no vLLM


def test_recipes_decide_the_needs(capsys):
    # sft=tiny_cpu sets no DeepSpeed; eval/backend=vllm needs vLLM; a forced flash_attention_2 needs flash-attn
    main(["check", "--stage", "sft", "--stage", "eval", "cluster=a100_1x", "sft=tiny_cpu", "eval/backend=vllm",
          "model.attn_implementation=flash_attention_2"])
    by_stage = _sections(capsys.readouterr().out)
    assert "deepspeed is not installed" not in by_stage["sft"]
    assert "problem: vllm is not installed, and the eval backend is vllm" in by_stage["eval"]
    assert "LLaMA-Factory trains with flash_attn=fa2 (model.attn_implementation), but flash_attn does not import " \
           "(not installed)" in by_stage["sft"]
    assert "fix:     set model.attn_implementation=auto" in by_stage["sft"]


def test_an_empty_environment_fails_with_a_setup_fix_into_that_folder(tmp_path, capsys):
    venv = bare_venv(tmp_path / "rl")  # at <prefix>/<stage>, where `medsage env setup` builds it
    assert main(["check", "--stage", "rl", f"cluster.envs.rl={venv}"]) == 1
    out = capsys.readouterr().out
    assert "[FAIL] rl" in out
    assert "problem: verl is not installed" in out
    assert f"fix:     medsage env setup --stage rl --prefix {venv.parent}" in out


def test_a_missing_environment_folder(tmp_path, capsys):
    assert main(["check", "--stage", "sft", f"cluster.envs.sft={tmp_path / 'sft'}"]) == 1
    out = capsys.readouterr().out
    assert "has no" in out and f"fix:     medsage env setup --stage sft --prefix {tmp_path}" in out


def test_version_outside_the_pin_is_reported(monkeypatch):
    from medsage.launch import env
    from medsage.recipes import compose

    monkeypatch.setitem(env.REQUIREMENTS, "sft", {"transformers": "<=4.0"})
    report = env.check_stage("sft", compose("env", []))
    assert not report.ok and "does not satisfy <=4.0" in report.problems[0].what


def test_more_than_one_rl_rank_needs_an_rl_environment_of_its_own(tmp_path):
    # This (dev) environment holds LLaMA-Factory's accelerate pin: fine for one RL rank, not for four.
    from importlib.metadata import version

    from packaging.version import Version

    from medsage.launch.env import check_stage
    from medsage.recipes import compose

    assert check_stage("rl", compose("env", [])).ok
    four = check_stage("rl", compose("env", ["cluster=a100_4x"]))
    multi_rank = [p for p in four.problems if "more than one rank" in p.what]
    if Version(version("accelerate")) >= Version("1.15"):
        assert not multi_rank
        return
    assert multi_rank and "must not be the SFT one" in multi_rank[0].what
    # the fix builds the RL stage its own environment, never installs RL into the one it shares with SFT
    assert multi_rank[0].fix.startswith("medsage env setup --stage rl --prefix envs, then set cluster.envs.rl=envs/rl")
    shared = check_stage("rl", compose("env", ["cluster=a100_4x", f"cluster.envs.rl={sys.prefix}",
                                               f"cluster.envs.sft={sys.prefix}"]))
    (shared_multi_rank,) = [p for p in shared.problems if "more than one rank" in p.what]
    assert shared_multi_rank.fix == multi_rank[0].fix  # one folder named for both stages is no RL folder of its own


# ---- facts this machine cannot show, fed to the pure check ----

def _gpu_node(**changes) -> preflight.Facts:
    """An RL environment on a 4-GPU node as it should be: every package, CUDA 13 torch, a 580 driver."""
    facts = preflight.Facts(
        python="/opt/envs/rl/bin/python", python_version="3.11.9", host="node1",
        packages={"medsage": "0.1.0", "verl": "0.9.1", "transformers": "5.5.4", "cachetools": "5.5.0", "torch": "2.11.0",
                  "tensordict": "0.10.0", "accelerate": "1.15.0", "vllm": "0.24.0", "flash_attn": None},
        imports={"flash_attn": "ModuleNotFoundError: No module named 'flash_attn'"},
        gpu_probed=True, torch_cuda="13.0", cuda_available=True, devices=4, driver="580.82.07")
    for key, value in changes.items():
        setattr(facts, key, value)
    return facts


def _a100_4x():
    from medsage.recipes import compose

    return compose("env", ["cluster=a100_4x"]).cluster


def test_a_good_gpu_node_has_no_problem():
    needs = preflight.rl_needs(_a100_4x(), attention=preflight.SDPA)
    assert preflight.check(needs, _gpu_node()) == []


def test_an_rl_environment_without_vllm():
    needs = preflight.rl_needs(_a100_4x(), attention=preflight.SDPA)
    facts = _gpu_node(packages={**_gpu_node().packages, "vllm": None})
    (problem,) = preflight.check(needs, facts, {"rl": "/opt/envs/rl", "sft": "/opt/envs/sft"})
    assert problem.what.startswith("vllm is not installed") and problem.where == "/opt/envs/rl/bin/python on node1"
    assert problem.fix == "medsage env setup --stage rl --prefix /opt/envs"


def test_an_sft_environment_without_deepspeed():
    needs = preflight.sft_needs(_a100_4x(), deepspeed="/recipes/deepspeed/zero2.json")
    facts = _gpu_node(packages={"medsage": "0.1.0", "llamafactory": "0.9.5", "transformers": "5.5.4",
                                "torch": "2.11.0", "deepspeed": None})
    (problem,) = preflight.check(needs, facts, {"sft": "/opt/envs/sft"})
    assert problem.what.startswith("deepspeed is not installed, and the SFT recipe trains with DeepSpeed")
    assert problem.fix == "medsage env setup --stage sft --prefix /opt/envs"


def test_a_driver_too_old_for_the_wheels_cuda():
    needs = preflight.rl_needs(_a100_4x(), attention=preflight.SDPA)
    # torch 2.11's CUDA 13 build on a 570 driver (CUDA 12.8): torch sees no device and says why
    facts = _gpu_node(driver="570.124.06", cuda_available=False, devices=0,
                      torch_warnings=["The NVIDIA driver on your system is too old (found version 12080)."])
    (problem,) = preflight.check(needs, facts)
    assert "NVIDIA driver 570.124.06 on node1 is older than 580.65.06" in problem.what
    assert "built for CUDA 13.0" in problem.what and "upgrade the NVIDIA driver on node1 to >= 580.65.06" in problem.fix
    # a CUDA 12 build: 525.60.13 is the floor (minor-version compatibility)
    assert preflight.check(needs, _gpu_node(torch_cuda="12.8", driver="525.60.13")) == []
    (old,) = preflight.check(needs, _gpu_node(torch_cuda="12.8", driver="525.60.12", cuda_available=False))
    assert "older than 525.60.13" in old.what


def test_fewer_gpus_than_the_cluster_recipe_names():
    needs = preflight.rl_needs(_a100_4x(), attention=preflight.SDPA)
    (problem,) = preflight.check(needs, _gpu_node(devices=2, visible_devices="0,1"))
    assert problem.what == ("torch sees 2 CUDA device(s) on node1 (CUDA_VISIBLE_DEVICES='0,1'), and cluster a100_4x "
                            "asks for 4 GPU(s) per node (cluster.gpus_per_node=4)")
    assert problem.fix.endswith("cluster.gpus_per_node=2")


def test_a_forced_flash_attention_2_without_flash_attn():
    needs = preflight.rl_needs(_a100_4x(), attention=preflight.FLASH_ATTENTION_2)
    (problem,) = preflight.check(needs, _gpu_node())
    assert "flash_attn does not import (not installed)" in problem.what
    assert problem.fix.startswith("set model.attn_implementation=auto")
    assert preflight.check(needs, _gpu_node(imports={"flash_attn": None})) == []


def test_a_fix_never_installs_a_stage_into_another_stages_environment():
    # `medsage env setup` builds <prefix>/<stage>: a stage folder named after its stage is rebuilt where it is
    assert preflight.setup_command("rl", {"rl": "/opt/envs/rl", "sft": "/opt/envs/sft"}) == \
        "medsage env setup --stage rl --prefix /opt/envs"
    for envs in ({"rl": "/opt/one", "sft": "/opt/one"}, {"rl": "/opt/my-rl"}):  # shared, or not at <prefix>/rl
        assert preflight.setup_command("rl", envs).startswith(
            "medsage env setup --stage rl --prefix envs, then set cluster.envs.rl=envs/rl")


def test_a_cluster_level_check_adds_to_the_same_report():
    report = preflight.Report()
    report.facts["rl@node1"] = _gpu_node()
    report.add(*preflight.check(preflight.rl_needs(_a100_4x(), attention=preflight.SDPA), _gpu_node(devices=2)))
    report.add(preflight.Problem("rl", "node2 cannot read the run folder /runs", "mount /runs on every node", "node2"))
    assert not report.ok and len(report.of("rl")) == 2
    text = report.render()
    assert "problem: rl: torch sees 2 CUDA device(s)" in text and "fix:     mount /runs on every node" in text
