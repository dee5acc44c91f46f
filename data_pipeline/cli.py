"""``medsage data``: build SAGE records and training files from raw sources.

    medsage data run [--config sage_pool] [overrides...]     the whole resumable run from a recipe
    medsage data ingest --source deeplesion --root DIR --out DIR [--option key=value ...]
    medsage data dedup --train DIR --eval DIR [--eval DIR ...] --out DIR [--threshold 10]
    medsage data audit --eval-root DIR [--train RECORDS_OR_DIR ...] --out DIR   train/test near-duplicates
    medsage data write --records FILE --out DIR [--easyr1-format parquet]
    medsage data sources                                       the registered source adapters
    medsage data demo-sources OUT                              generated sources in their real layouts (demo)
    medsage data lesion-task OUT [--train N] [--eval M] [--seed S]   the miniature's generated lesion task
    medsage data synth ...                                     trajectory synthesis (data_pipeline/synthesis/cli.py)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _parse_options(pairs: list[tuple[str, str]]) -> dict:
    options = {}
    for key, value in pairs:
        try:
            options[key] = json.loads(value)  # numbers, lists, booleans
        except json.JSONDecodeError:
            options[key] = value
    return options


def _cmd_run(args) -> int:
    from omegaconf import OmegaConf

    from medsage.data_pipeline.run import RunConfig, run
    from medsage.recipes import compose

    cfg = compose(f"data/{args.config}", args.overrides, extra_dirs=args.recipes_dir or ())
    cfg = RunConfig.from_dict(OmegaConf.to_container(cfg, resolve=True), f"recipes/data/{args.config}.yaml")
    summary = run(cfg)
    print(json.dumps(summary, indent=2))
    return 0


def _cmd_ingest(args) -> int:
    from medsage.data_pipeline.run import RunConfig, SourceSpec, run

    spec = SourceSpec(args.source, str(Path(args.root).resolve()), _parse_options(args.option))
    if problem := spec.option_problem():
        raise ValueError(f"--option: {problem}")
    cfg = RunConfig.from_dict({"out_dir": args.out, "sources": [vars(spec)], "shard_size": args.shard_size,
                               "seed": args.seed, "dedup": {"within_train": False}})
    print(json.dumps(run(cfg), indent=2))
    return 0


def _cmd_audit(args) -> int:
    from medsage.data_pipeline.audit import audit
    from medsage.data_pipeline.dedup import DedupConfig

    cfg = DedupConfig(threshold=args.threshold, workers=args.workers)
    summary = audit(args.eval_root, args.out, args.train, tuple(args.benchmarks.split(",")), cfg)
    for name, c in summary["checks"].items():
        print(f"{name}: {c['with_near_duplicate']} of {c['eval_images']} evaluation images have a near-duplicate "
              f"(<= {summary['threshold_bits']} bits) among {c['against_images']}")
    print(f"pairs: {Path(args.out) / 'pairs.jsonl'}")
    return 0


def _cmd_dedup(args) -> int:
    from medsage.data_pipeline.dedup import DedupConfig, dedup_folders

    cfg = DedupConfig(threshold=args.threshold, within_train=not args.no_within_train, workers=args.workers,
                      **({"max_pixels": args.max_pixels} if args.max_pixels else {}))
    summary = dedup_folders(args.train, args.eval, args.out, cfg)
    print(json.dumps(summary, indent=2))
    return 0


def _cmd_write(args) -> int:
    from medsage.data_pipeline.run import WriteConfig, write_outputs
    from medsage.records import read_records

    samples = [s for s in read_records(args.records) if s.kept]
    from medsage.prompts import PromptConfig

    cfg = WriteConfig(sft_name=args.sft_name, easyr1_format=args.easyr1_format, embed_images=args.embed_images)
    print(json.dumps(write_outputs(samples, cfg, Path(args.out).resolve(), PromptConfig.load(args.prompt)), indent=2))
    return 0


def _cmd_sources(args) -> int:
    from medsage.registry import SOURCES

    for name in SOURCES.names():
        adapter = SOURCES.get(name)
        doc = (sys.modules[adapter.__module__].__doc__ or "").strip().splitlines()
        print(f"{name:16s} {doc[0] if doc else ''}")
    return 0


def _cmd_demo_sources(args) -> int:
    from medsage.launch.demo.sources import make_demo_sources

    for name, root in make_demo_sources(Path(args.out), defects=not args.no_defects).items():
        print(f"{name:16s} {root}")
    return 0


def _cmd_lesion_task(args) -> int:
    from medsage.launch.demo.lesions import write_task

    summary = write_task(Path(args.out), args.train, args.eval, args.seed)
    for part in ("train", "eval"):
        s = summary[part]
        print(f"{part:5s} {s['root']} (split {s['split']}, seed {s['seed']}): {s['images']} images, "
              f"lesions per image {s['lesion_count']}")
    print(f"distribution: {Path(args.out) / 'lesion_task.json'}")
    return 0




def add_arguments(parser) -> None:
    from medsage.data_pipeline.synthesis import cli as synth_cli
    from medsage.launch.cli import add_commands, add_overrides, name_value

    parser.description, _, parser.epilog = __doc__.strip().partition("\n\n")
    sub = add_commands(parser)

    p = sub.add_parser("run", help="the whole resumable run from a recipe in recipes/data/")
    p.add_argument("--config", default="sage_pool", help="recipe name in recipes/data/ (default: sage_pool)")
    p.add_argument("--recipes-dir", action="append", help="extra folder with your own data/<name>.yaml recipes")
    add_overrides(p, "out_dir=data_out sources.0.root=/data/DL")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("ingest", help="one source -> records, rejections and RL files (no dedup against eval)")
    p.add_argument("--source", required=True, help="registered source adapter (see `medsage data sources`)")
    p.add_argument("--root", required=True, help="the source folder as downloaded")
    p.add_argument("--out", required=True, help="run folder (rerun the same command to resume)")
    p.add_argument("--option", action="append", default=[], type=name_value, metavar="KEY=VALUE",
                   help="adapter option (repeatable; the value is read as JSON when it parses)")
    p.add_argument("--shard-size", type=int, default=500, help="inputs per resumable shard (default: 500)")
    p.add_argument("--seed", type=int, default=0, help="seed of RoI variants and distractors (default: 0)")
    p.set_defaults(func=_cmd_ingest)

    p = sub.add_parser("dedup", help="pHash dedup of plain image folders: training vs evaluation images")
    p.add_argument("--train", action="append", required=True, help="training image folder (repeatable)")
    p.add_argument("--eval", action="append", required=True, help="evaluation image folder (repeatable)")
    p.add_argument("--out", required=True, help="report folder: kept.txt, removed.jsonl, summary.json")
    p.add_argument("--threshold", type=int, default=None, help="max Hamming distance in bits (default: 10)")
    p.add_argument("--workers", type=int, default=None, help="hashing processes (default: all cores)")
    p.add_argument("--no-within-train", action="store_true", help="keep near-duplicates inside the training set")
    p.add_argument("--max-pixels", type=int, default=None,
                   help="images over this many pixels are not decoded (default: 100 million)")
    p.set_defaults(func=_cmd_dedup)

    p = sub.add_parser("audit", help="contamination audit: benchmark train vs test, training sets vs benchmarks")
    p.add_argument("--eval-root", required=True, help="the eval.data_root folder with the benchmarks as downloaded")
    p.add_argument("--benchmarks", default="paper_five", help="recipe groups (recipes/eval/benchmarks), comma-separated")
    p.add_argument("--train", action="append", default=[], help="training set: records.jsonl or image folder (repeatable)")
    p.add_argument("--out", required=True, help="report folder: pairs.jsonl, summary.json")
    p.add_argument("--threshold", type=int, default=None, help="max Hamming distance in bits (default: 10)")
    p.add_argument("--workers", type=int, default=None, help="hashing processes (default: all cores)")
    p.set_defaults(func=_cmd_audit)

    p = sub.add_parser("write", help="records.jsonl -> LLaVA SFT (records with a trajectory), verl and EasyR1 files")
    p.add_argument("--records", required=True, help="records JSON lines (medsage.records)")
    p.add_argument("--out", required=True, help="output folder (sft/ and rl/ are written inside)")
    p.add_argument("--sft-name", default="sage_sft", help="LLaMA-Factory dataset name (default: sage_sft)")
    p.add_argument("--easyr1-format", choices=["jsonl", "parquet"], default="jsonl")
    p.add_argument("--prompt", default="lvkc", help="recipes/prompt/<name> (or a YAML path): the SFT and RL human turn")
    p.add_argument("--embed-images", action="store_true", help="image bytes inside the parquet files")
    p.set_defaults(func=_cmd_write)

    p = sub.add_parser("sources", help="list the registered source adapters")
    p.set_defaults(func=_cmd_sources)

    synth_cli.add_arguments(sub.add_parser("synth", help="trajectory synthesis, verification and SAGE-rl sampling"))

    p = sub.add_parser("demo-sources", help="write one generated copy of each source, in its real layout (demo)")
    p.add_argument("out", help="folder to write DeepLesion/, roboflow_coco/, roboflow_yolo/, PubMedVision/ into")
    p.add_argument("--no-defects", action="store_true", help="leave out the DeepLesion rows the filter rejects")
    p.set_defaults(func=_cmd_demo_sources)

    p = sub.add_parser("lesion-task", help="the miniature's generated lesion task: train and eval COCO exports")
    p.add_argument("out", help="folder to write train/, eval/ and lesion_task.json into")
    p.add_argument("--train", type=int, default=400, help="training images (default: 400)")
    p.add_argument("--eval", type=int, default=200, help="evaluation images, from a disjoint seed (default: 200)")
    p.add_argument("--seed", type=int, default=0, help="seed of the training set; eval uses a derived one (default: 0)")
    p.set_defaults(func=_cmd_lesion_task)


def main(argv: list[str] | None = None) -> int:
    from medsage.launch.cli import parse

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["synth"]:  # its own module runs it (its errors, its output)
        from medsage.data_pipeline.synthesis.cli import main as synth

        return synth(argv[1:])
    args = parse("data", argv)
    if getattr(args, "threshold", 0) is None:
        from medsage.data_pipeline.dedup import DEFAULT_THRESHOLD

        args.threshold = DEFAULT_THRESHOLD
    from medsage.lock import FolderLocked
    from medsage.registry import RegistryError

    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError, RegistryError, FolderLocked) as err:  # bad input: the message names file and reason
        print(f"medsage data {args.command}: {err}", file=sys.stderr)
        return 2
