"""``medsage env check``: per stage, the interpreter, the engine versions found and any conflict.

Why per stage: LLaMA-Factory 0.9.5, verl 0.9.1 and vLLM pin conflicting torch/transformers versions
(DESIGN.md), so a GPU node runs each stage in its own environment, named by
``cluster.envs.<stage>`` and handed to Ray as the job's runtime_env.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field

# What each stage imports, with the versions medsage was tested against (pyproject extras).
REQUIREMENTS: dict[str, dict[str, str]] = {
    "data": {"medsage": "", "imagehash": ">=4.3", "pyarrow": ">=15", "openai": ">=1.40"},
    "sft": {"medsage": "", "llamafactory": "==0.9.5", "transformers": ">=4.49,<=5.6.0", "torch": ">=2.4"},
    # tensordict: verl's legacy trainer (the retry's) asserts >= 0.10 in DataProto.to_tensordict
    "rl": {"medsage": "", "verl": "==0.9.1", "transformers": ">=5.5.3,<5.11,!=5.6.0", "cachetools": ">=5",
           "torch": ">=2.4", "tensordict": ">=0.10,<=0.10.0", "accelerate": ""},
    "eval": {"medsage": "", "transformers": ">=4.49", "torch": ">=2.4"},
}
EXTRA_FOR_STAGE = {"data": "", "sft": "[sft]", "rl": "[rl]", "eval": "[torch]"}
OPTIONAL = {"rl": ["vllm"], "eval": ["vllm"]}  # reported, not required: GPU-only engines
# verl's init_model fails on more than one rank with accelerate 1.11 (llamafactory 0.9.5's pin) and
# transformers 5.5 (accelerate/big_modeling.py, _is_hf_initialized); 1.15 works
MULTI_RANK_RL = {"accelerate": ">=1.15"}

@dataclass
class StageReport:
    stage: str
    python: str
    python_version: str = ""
    packages: dict[str, str | None] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    fix: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems


def check_stage(stage: str, env: str | None, ranks: int = 1) -> StageReport:
    """Probe ``env``'s interpreter (a subprocess: nothing is imported here) against the stage's pins."""
    from packaging.specifiers import SpecifierSet

    from medsage.runtime import package_versions, stage_python

    try:
        python = stage_python(env)
    except FileNotFoundError as err:
        return StageReport(stage, str(env), problems=[str(err)],
                           fix=f"python -m venv {env} && {env}/bin/pip install 'medsage{EXTRA_FOR_STAGE[stage]}'")
    names = [*REQUIREMENTS[stage], *OPTIONAL.get(stage, [])]
    try:
        probe = package_versions(python, names)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as err:
        return StageReport(stage, python, problems=[f"interpreter failed: {err}"])
    report = StageReport(stage, probe["python"], probe["python_version"], probe["packages"])
    for name, spec in REQUIREMENTS[stage].items():
        found = probe["packages"].get(name)
        if found is None:
            report.problems.append(f"{name} is not installed")
        elif spec and found.split("+")[0] not in SpecifierSet(spec):
            report.problems.append(f"{name} {found} does not satisfy {spec}")
    if stage == "rl" and ranks > 1:
        for name, spec in MULTI_RANK_RL.items():
            found = probe["packages"].get(name)
            if found and found.split("+")[0] not in SpecifierSet(spec):
                report.problems.append(
                    f"{name} {found}: verl's init_model fails on more than one rank ({ranks} here) before {name}{spec}; "
                    "the RL environment must not be the SFT one (llamafactory 0.9.5 pins accelerate<=1.11)")
    if report.problems:
        report.fix = f"uv pip install --python {python} -e '.{EXTRA_FOR_STAGE[stage]}'" if EXTRA_FOR_STAGE[stage] \
            else f"uv pip install --python {python} -e ."
    return report


def add_arguments(parser) -> None:
    from medsage.launch.cli import add_overrides

    parser.description = ("Check the per-stage Python environments named by the cluster recipe "
                          "(cluster.envs.<stage>; null means this interpreter).")
    parser.add_argument("action", choices=["check", "setup"],
                        help="what to do (setup: build the GPU stage environments from locks/; see `medsage env setup --help`)")
    parser.add_argument("--stage", action="append", choices=list(REQUIREMENTS),
                        help="check only this stage (repeatable; default: all)")
    add_overrides(parser, "cluster=a100_4x cluster.envs.rl=/opt/rl")


def main(argv: list[str] | None = None) -> int:
    from medsage.launch.cli import parse

    if argv and argv[0] == "setup":  # its own flags (--prefix, --cluster): medsage.launch.env_setup
        from medsage.launch.env_setup import main as setup

        return setup(argv[1:])
    args = parse("env", argv, intermixed=True)

    from medsage.recipes import compose

    cfg = compose("env", args.overrides)
    envs = cfg.cluster.envs
    failed = 0
    for stage in args.stage or list(REQUIREMENTS):
        ranks = int(cfg.cluster.nnodes) * max(1, int(cfg.cluster.gpus_per_node))
        report = check_stage(stage, envs.get(stage), ranks)
        mark = "ok" if report.ok else "CONFLICT"
        print(f"[{mark}] {stage}: {report.python} (Python {report.python_version or '?'})")
        for name, ver in report.packages.items():
            print(f"        {name:<13} {ver or '-'}")
        for problem in report.problems:
            print(f"        problem: {problem}")
        if report.fix:
            print(f"        fix:     {report.fix}")
        failed += not report.ok
    return 1 if failed else 0
