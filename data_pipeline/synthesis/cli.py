"""``medsage data synth``: trajectory synthesis and SAGE-rl sampling.

    medsage data synth run --records pool.jsonl --out out/synth [hydra overrides]
    medsage data synth rl --kept out/synth/kept.jsonl --out out/rl [--target 10000] [--by question_type,modality]
        [--model qwen2_5_vl_7b] [--max-prompt-length 1024]

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
    rl.add_argument("--only", default=None, metavar="KEY=V1,V2",
                    help="draw only questions whose KEY (a record field or metadata entry) is one of the values, "
                         "e.g. question_kind=quadrant (default: every question)")
    rl.add_argument("--seed", type=int, default=0)
    rl.add_argument("--name", default=layout.RL_SAMPLE, help="file name stem")
    rl.add_argument("--prompt", default="lvkc", help="recipes/prompt/<name> (or a YAML path): the human turn, as in "
                                                      "SFT and evaluation")
    rl.add_argument("--model", default=None, help="recipes/model/<name>: its image pixel bounds go into the rows "
                                                  "(default: the RL recipe's model)")
    rl.add_argument("--max-prompt-length", type=int, default=None,
                    help="prompt tokens a row may take (default: the RL recipe's rl.max_prompt_length)")
    rl.add_argument("--model-path", default=None,
                    help="the model folder (or hub id) whose processor counts each whole prompt as verl will (needs "
                         "transformers); without it only the images are counted and medsage rl counts the rest")


def prompt_counter(model_path: str):
    """verl's prompt-length count for ``model_path``'s processor (``medsage.plugins.engines.verl_data``)."""
    try:
        from transformers import AutoProcessor
    except ImportError as err:
        raise ValueError(f"--model-path needs transformers in this environment ({err}); leave it out to count "
                         "images only (medsage rl counts the whole prompt)") from err
    from medsage.plugins.engines.verl_data import PromptCounter

    return PromptCounter(AutoProcessor.from_pretrained(model_path))


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
        from medsage.data_pipeline.rl_sample import balanced_sample, only, rl_budget, within_budget, write_rl
        from medsage.records import read_records

        from medsage.prompts import PromptConfig

        budget = rl_budget(args.model, args.max_prompt_length)
        counter = prompt_counter(args.model_path) if args.model_path else None
        pool, rejected = within_budget(list(read_records(args.kept)), budget, PromptConfig.load(args.prompt), counter)
        if rejected and not pool:
            raise ValueError(f"{args.kept}: no question fits the prompt budget ({len(rejected)} set aside, e.g. "
                             f"{rejected[0]['id']}: {rejected[0]['detail']}); raise --max-prompt-length or lower the "
                             "model recipe's image_max_pixels")
        if args.only:
            key, sep, values = args.only.partition("=")
            if not sep or not key or not values:
                raise ValueError(f"--only {args.only!r}: expected KEY=V1,V2, e.g. question_kind=quadrant")
            pool = only(pool, key, {v for v in values.split(",") if v})
        chosen, summary = balanced_sample(pool, args.target, tuple(k for k in args.by.split(",") if k), args.seed)
        paths = write_rl(chosen, args.out, summary, args.name, args.prompt, budget, rejected,
                         "text and images" if counter else "images")
        print(json.dumps({**summary, "files": {k: str(v) for k, v in paths.items()}}, indent=2))
        return 0
    except (RecordError, RegistryError, HydraException, CallError, FolderLocked, ValueError, OSError) as err:
        print(f"medsage data synth: error: {redact(err)}", file=sys.stderr)
        return 2
