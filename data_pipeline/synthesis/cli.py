"""``medsage data synth``: trajectory synthesis and SAGE-rl sampling.

    medsage data synth run --records pool.jsonl --out out/synth [hydra overrides]
    medsage data synth rl --kept out/synth/kept.jsonl --out out/rl [--target 10000] [--by question_type,modality]

``run`` composes ``recipes/synthesis/default.yaml`` with the overrides (``synthesizer=llm
client.base_url=... client.model=... verify.mode=llm``) and prints the final report.
"""

from __future__ import annotations

import json
import sys

from medsage.data_pipeline import layout


def add_arguments(p) -> None:
    """``medsage data synth``'s sub-commands (its parser is a sub-command of ``medsage data``)."""
    from medsage.launch.cli import add_commands, add_overrides

    p.description, _, p.epilog = __doc__.strip().partition("\n\n")
    sub = add_commands(p, dest="synth_command")
    run = sub.add_parser("run", help="synthesize, verify and augment LVKC trajectories for a record file")
    run.add_argument("--records", required=True, help="JSON-lines records (medsage.records.Sample) from `medsage data`")
    run.add_argument("--out", required=True, help="output folder: kept.jsonl, rejected.jsonl, report.json, sft/, cache/")
    run.add_argument("--config", default="synthesis/default", help="recipe name under medsage's recipes folder")
    add_overrides(run, "synthesizer=llm client.model=gpt-4o")
    rl = sub.add_parser("rl", help="balanced SAGE-rl sampling from a kept.jsonl")
    rl.add_argument("--kept", required=True, help="kept.jsonl written by `synth run`")
    rl.add_argument("--out", required=True, help="output folder for sage_rl.{parquet,easyr1.jsonl,jsonl,summary.json}")
    rl.add_argument("--target", type=int, default=10_000, help="rows to draw (default 10000, as in the paper)")
    rl.add_argument("--by", default="question_type,modality", help="comma-separated stratum keys")
    rl.add_argument("--seed", type=int, default=0)
    rl.add_argument("--name", default=layout.RL_SAMPLE, help="file name stem")
    rl.add_argument("--prompt", default="lvkc", help="recipes/prompt/<name> (or a YAML path): the human turn, as in "
                                                      "SFT and evaluation")


def main(argv: list[str] | None = None) -> int:
    from medsage.launch.cli import parse

    args = parse("data", ["synth", *(sys.argv[1:] if argv is None else argv)])
    from hydra.errors import HydraException

    from medsage.chat import CallError, redact
    from medsage.lock import FolderLocked
    from medsage.records import RecordError
    from medsage.registry import RegistryError

    try:
        if args.synth_command == "run":
            from medsage.data_pipeline.synthesis.config import synthesis_recipe
            from medsage.data_pipeline.synthesis.run import run_synthesis, summary_line
            from medsage.recipes import compose

            cfg = synthesis_recipe(compose(args.config, args.overrides), f"recipes/{args.config}.yaml")
            result = run_synthesis(args.records, cfg, args.out)
            print(redact(json.dumps(result.report, indent=2)))
            print(summary_line(result.report), flush=True)
            return 0
        from medsage.data_pipeline.rl_sample import balanced_sample, write_rl
        from medsage.records import read_records

        pool = list(read_records(args.kept))
        chosen, summary = balanced_sample(pool, args.target, tuple(k for k in args.by.split(",") if k), args.seed)
        paths = write_rl(chosen, args.out, summary, args.name, args.prompt)
        print(json.dumps({**summary, "files": {k: str(v) for k, v in paths.items()}}, indent=2))
        return 0
    except (RecordError, RegistryError, HydraException, CallError, FolderLocked, ValueError, OSError) as err:
        print(f"medsage data synth: error: {redact(err)}", file=sys.stderr)
        return 2
