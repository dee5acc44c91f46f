"""``medsage eval``: run benchmarks, score any predictions file, judge with GPT-score, list benchmarks.

    medsage eval run [hydra overrides...]            # recipes/eval.yaml
    medsage eval score PREDICTIONS.jsonl [--data vqa_rad=/data/vqa_rad] [--out DIR]
    medsage eval judge PREDICTIONS.jsonl [hydra overrides...]   # Table 2 GPT-score
    medsage eval list                                # installed benchmarks and their published sizes
    medsage eval doctor ROOT [--benchmarks paper_five,omnimedvqa] [--json FILE]  # check the downloads
    medsage eval list --check ROOT                   # the same check
    medsage eval demo-benchmarks OUT                 # the five benchmarks, generated in their release layouts
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def add_arguments(parser) -> None:
    from medsage.launch.cli import add_commands, add_overrides, name_value

    parser.description, _, parser.epilog = __doc__.strip().partition("\n\n")
    sub = add_commands(parser)
    p = sub.add_parser("run", help="evaluate a model on the recipe's benchmarks (recipes/eval.yaml)")
    add_overrides(p, "model=tiny model.path=... eval.data_root=...")
    p.set_defaults(func=_run)

    p = sub.add_parser("score", help="score a predictions file from any system: per-item verdicts with reasons, "
                                     "plus a summary")
    p.epilog = ("Each line: {prediction, question, answer, answer_type[, options]} or {prediction, benchmark, id}.")
    p.add_argument("predictions", help="JSON-lines predictions file")
    p.add_argument("--data", action="append", default=[], metavar="NAME=PATH", type=name_value,
                   help="load benchmark NAME from PATH to resolve (benchmark, id) lines; repeatable")
    p.add_argument("--split", action="append", default=[], metavar="NAME=SPLIT", type=name_value,
                   help="split for --data NAME")
    p.add_argument("--out", default=None, help="folder for the verdicts and summary (default: beside the file)")
    p.set_defaults(func=_score)

    p = sub.add_parser("judge", help="GPT-score (1-5) the reasoning in a predictions file (Table 2)")
    p.add_argument("predictions", help="predictions.jsonl written by `medsage eval run`")
    add_overrides(p, "eval.judge.base_url=... eval.judge.model=...")
    p.set_defaults(func=_judge)

    p = sub.add_parser("list", help="installed benchmarks and their published sizes")
    p.add_argument("--check", metavar="ROOT", default=None, help="check the downloads under ROOT (= eval doctor ROOT)")
    p.set_defaults(func=_list)

    p = sub.add_parser("doctor", help="check every benchmark's downloaded files under ROOT: layout, split counts "
                                      "against the published ones, repeats, missing images (exit 1 on a problem)")
    p.add_argument("root", help="the eval.data_root folder (vqa_rad/, Slake1.0/, pathvqa/, PMC-VQA/, MMMU/, ...)")
    p.add_argument("--benchmarks", default="paper_five", help="recipe groups (recipes/eval/benchmarks), comma-separated")
    p.add_argument("--json", default=None, help="also write the report as JSON here")
    p.set_defaults(func=_doctor)

    p = sub.add_parser("demo-benchmarks", help="write small generated copies of the five Table 1 benchmarks, "
                                               "in the layouts their releases use (for the demo)")
    p.add_argument("out", help="data root to write vqa_rad/, Slake1.0/, pathvqa/, PMC-VQA/, MMMU/ into")
    p.set_defaults(func=_demo_benchmarks)


def _run(args) -> int:
    from omegaconf.errors import InterpolationToMissingValueError, MissingMandatoryValue

    from medsage.chat import CallError, redact
    from medsage.config import ConfigError
    from medsage.eval.benchmarks.base import BenchmarkDataError, MissingDataError
    from medsage.eval.run import evaluate
    from medsage.lock import FolderLocked
    from medsage.recipes import compose

    try:
        cfg = compose("eval", args.overrides)
        if cfg.cluster.accelerator == "gpu" and (problems := _preflight(cfg)):
            print(f"medsage eval run: not launched: this environment cannot run the recipe\n{problems}", file=sys.stderr)
            return 1
        summaries = evaluate(cfg)
    except (MissingMandatoryValue, InterpolationToMissingValueError) as err:
        print(f"medsage eval run: a required recipe value is not set ({str(err).splitlines()[0]}; "
              f"needed by {err.full_key})", file=sys.stderr)
        return 2
    except (MissingDataError, BenchmarkDataError, ConfigError, FolderLocked) as err:
        print(f"medsage eval run: {err}", file=sys.stderr)
        return 2
    except CallError as err:  # the endpoint failed for good (after the retries): redacted, finished items are kept
        print(f"medsage eval run: the openai backend failed: {redact(err)}", file=sys.stderr)
        return 2
    for name, s in summaries.items():
        print(f"{name:<12} n={s.get('n', 0):<6} accuracy={s.get('accuracy')}  unparsed={s.get('unparsed', 0)}  "
              f"closed-only={s.get('closed_only_accuracy')}  MedEvalKit-compatible={s.get('medevalkit_accuracy')}")
        data = s.get("data") or {}
        print(f"{'':<12} {data.get('split')} split, {data.get('layout')}: {', '.join(data.get('files') or [])}")
    return 0


def _preflight(cfg) -> str:
    """This interpreter (the backend runs in it) against what the recipe's backend needs on a GPU cluster
    (launch/preflight.py); the problems with their fixes, "" when there are none."""
    from omegaconf import OmegaConf

    from medsage.launch import preflight

    backend = OmegaConf.to_container(cfg.eval.backend, resolve=True)
    needs = preflight.eval_needs(cfg.cluster, backend, attention=str(cfg.model.attn_implementation))
    report = preflight.run(needs, None, OmegaConf.to_container(cfg.cluster.envs, resolve=True))
    return report.render()


def _score(args) -> int:
    from medsage.eval.benchmarks.base import load_benchmark
    from medsage.eval.scoring import PredictionError, item_fields, score_predictions

    splits = dict(args.split)
    lookup = {}
    for name, path in args.data:
        for sample in load_benchmark(name, path, split=splits.get(name)):
            lookup[(name, sample.id)] = item_fields(sample, name, None)
    try:
        verdicts, summary_path, summary = score_predictions(args.predictions, args.out, lookup)
    except (PredictionError, FileNotFoundError) as err:
        print(f"medsage eval score: {err}", file=sys.stderr)
        return 2
    for name, s in summary.items():
        print(f"{name:<12} n={s['n']:<6} accuracy={s['accuracy']}  semantic={s['semantic_accuracy']}  "
              f"unparsed={s['unparsed']}  open recall={s['open_recall']}  closed-only={s['closed_only_accuracy']}  "
              f"MedEvalKit-compatible={s['medevalkit_accuracy']} ({s['medevalkit_differs']} items differ)  "
              f"strict format={s['strict_format']}  <LOC> IoU={s['loc_iou']} (n={s['loc_iou_n']})")
        if s["by_kind"]:
            print(f"{'':<12} by kind: " + "  ".join(f"{k}={v['accuracy']} (n={v['n']})" for k, v in s["by_kind"].items()))
    print(f"verdicts: {verdicts}\nsummary:  {summary_path}")
    return 0


def _judge(args) -> int:
    from medsage.chat import CallError, redact
    from medsage.config import ConfigError
    from medsage.eval import layout
    from medsage.eval.judge import JudgeConfig, judge_items, summarize_judgements
    from medsage.eval.scoring import PredictionError, read_predictions
    from medsage.io import atomic_write_json, atomic_write_jsonl
    from medsage.recipes import compose

    cfg = compose("eval", ["eval.data_root=unused", *args.overrides])
    path = Path(args.predictions)
    try:
        judge = JudgeConfig.from_cfg(cfg.eval.judge)
        items = read_predictions(path)
        verdicts = judge_items(items, judge)
    except (CallError, ConfigError, PredictionError, ValueError, OSError) as err:
        print(f"medsage eval judge: {redact(err)}", file=sys.stderr)
        return 2
    atomic_write_jsonl(layout.beside(path, "judge.jsonl"), verdicts)
    by_bench: dict[str, list] = {}
    for v in verdicts:
        by_bench.setdefault(v.get("benchmark") or "custom", []).append(v)
    summary = {b: summarize_judgements(vs, judge.dimensions) for b, vs in by_bench.items()}
    # Beside run.json so `medsage report` finds it for Table 2.
    judge_file = layout.run_dir_of(path) / layout.JUDGE
    merged = json.loads(judge_file.read_text()) if judge_file.exists() else {}
    atomic_write_json(judge_file, {**merged, **summary})
    for b, s in summary.items():
        dims = ", ".join(f"{d} {x['mean']} ({x['unparsed']} unparsed)" for d, x in s["dimensions"].items())
        failed = f"; {s['failed']} item(s) failed, see {path.stem}.judge.jsonl" if s["failed"] else ""
        print(f"{b}: {dims}{failed}")
    return 0


def _list(args) -> int:
    from medsage.registry import BENCHMARKS

    if args.check:  # `eval list --check ROOT` is `eval doctor ROOT`
        args.root, args.benchmarks, args.json = args.check, "paper_five", None
        return _doctor(args)

    for name in BENCHMARKS.names():
        info = BENCHMARKS.get(name).info
        sizes = ", ".join(f"{k} {v}" for k, v in info.published_sizes.items()) or "—"
        print(f"{name:<12} {info.title:<11} types {'/'.join(info.question_types):<19} published: {sizes}\n"
              f"{'':<12} data: {info.published_at}")
    return 0


def _doctor(args) -> int:
    from dataclasses import asdict

    from medsage.eval.doctor import diagnose, render
    from medsage.io import atomic_write_json

    reports = diagnose(args.root, tuple(g for g in args.benchmarks.split(",") if g))
    print(render(reports))
    if args.json:
        atomic_write_json(Path(args.json), [asdict(r) | {"ok": r.ok} for r in reports])
    return 0 if all(r.ok for r in reports) else 1


def _demo_benchmarks(args) -> int:
    from medsage.launch.demo.benchmarks import make_demo_benchmarks

    print(f"generated benchmarks written to {make_demo_benchmarks(Path(args.out))}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from medsage.launch.cli import parse

    args = parse("eval", argv)
    return int(args.func(args) or 0)
