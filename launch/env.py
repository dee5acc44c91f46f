"""``medsage env check``: per stage, the interpreter, the engine versions found, and every problem with its fix:
the checks ``medsage rl|sft|eval run`` make before they launch on a GPU recipe (medsage.launch.preflight).

Why per stage: LLaMA-Factory 0.9.5, verl 0.9.1 and vLLM pin conflicting torch/transformers versions
(docs/design.md), so a GPU node runs each stage in its own environment, named by
``cluster.envs.<stage>`` and handed to Ray as the job's runtime_env.
"""

from __future__ import annotations

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
# verl's init_model fails on more than one rank with accelerate 1.11 (llamafactory 0.9.5's pin) and
# transformers 5.5 (accelerate/big_modeling.py, _is_hf_initialized); 1.15 works
MULTI_RANK_RL = {"accelerate": ">=1.15"}


def check_stage(stage: str, cfg):
    """``stage``'s environment (``cluster.envs.<stage>``) probed and checked: a ``preflight.Report``."""
    from omegaconf import OmegaConf

    from medsage.launch import preflight

    envs = OmegaConf.to_container(cfg.cluster.envs, resolve=True)
    return preflight.run(preflight.recipe_needs(stage, cfg), envs.get(stage), envs)


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
    failed = 0
    for stage in args.stage or list(REQUIREMENTS):
        report = check_stage(stage, cfg)
        facts = report.facts.get(stage)
        print(f"[{'ok' if report.ok else 'FAIL'}] {stage}: {facts.python if facts else cfg.cluster.envs.get(stage)} "
              f"(Python {facts.python_version if facts else '?'})")
        for name, ver in (facts.packages if facts else {}).items():
            print(f"        {name:<13} {ver or '-'}")
        if facts and facts.gpu_probed:
            print(f"        {'cuda':<13} {_cuda_line(facts)}")
        for problem in report.problems:
            print(f"        problem: {problem.what}")
            print(f"        fix:     {problem.fix}")
        failed += not report.ok
    return 1 if failed else 0


def _cuda_line(facts) -> str:
    if facts.torch_error:
        return f"torch does not import ({facts.torch_error})"
    seen = f"{facts.devices} device(s)" if facts.cuda_available else "no device visible"
    return f"{seen}; torch built for CUDA {facts.torch_cuda or '- (CPU build)'}; driver {facts.driver or '-'}"
