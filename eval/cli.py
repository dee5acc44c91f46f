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

import argparse
import json
import sys
from pathlib import Path


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="medsage eval run", description="Evaluate a model (recipes/eval.yaml).")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model=tiny model.path=... eval.data_root=...")
    args = parser.parse_args(argv)
    from omegaconf.errors import InterpolationToMissingValueError, MissingMandatoryValue

    from medsage.eval.benchmarks.base import BenchmarkDataError, MissingDataError
    from medsage.eval.run import evaluate
    from medsage.recipes import compose

    try:
        summaries = evaluate(compose("eval", args.overrides))
    except (MissingMandatoryValue, InterpolationToMissingValueError) as err:
        print(f"medsage eval run: a required recipe value is not set ({str(err).splitlines()[0]}; "
              f"needed by {err.full_key})", file=sys.stderr)
        return 2
    except (MissingDataError, BenchmarkDataError) as err:
        print(f"medsage eval run: {err}", file=sys.stderr)
        return 2
    for name, s in summaries.items():
        print(f"{name:<12} n={s.get('n', 0):<6} accuracy={s.get('accuracy')}  unparsed={s.get('unparsed', 0)}  "
              f"closed-only={s.get('closed_only_accuracy')}  MedEvalKit-compatible={s.get('medevalkit_accuracy')}")
        data = s.get("data") or {}
        print(f"{'':<12} {data.get('split')} split, {data.get('layout')}: {', '.join(data.get('files') or [])}")
    return 0


def _score(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="medsage eval score",
        description="Score a predictions file from any system: per-item verdicts with reasons, plus a summary. "
                    "Each line: {prediction, question, answer, answer_type[, options]} or {prediction, benchmark, id}.")
    parser.add_argument("predictions", help="JSON-lines predictions file")
    parser.add_argument("--data", action="append", default=[], metavar="NAME=PATH",
                        help="load benchmark NAME from PATH to resolve (benchmark, id) lines; repeatable")
    parser.add_argument("--split", action="append", default=[], metavar="NAME=SPLIT", help="split for --data NAME")
    parser.add_argument("--out", default=None, help="folder for the verdicts and summary (default: beside the file)")
    args = parser.parse_args(argv)
    from medsage.eval.benchmarks.base import load_benchmark
    from medsage.eval.scoring import PredictionError, score_predictions

    splits = dict(s.split("=", 1) for s in args.split)
    lookup = {}
    for spec in args.data:
        if "=" not in spec:
            parser.error(f"--data expects NAME=PATH, got {spec!r}")
        name, path = spec.split("=", 1)
        for sample in load_benchmark(name, path, split=splits.get(name)):
            lookup[(name, sample.id)] = {"benchmark": name, "id": sample.id, "question": sample.question,
                                         "answer": sample.answer, "answer_type": sample.question_type,
                                         "options": sample.options,
                                         "accepted_answers": sample.metadata.get("accepted_answers")}
    try:
        verdicts, summary_path, summary = score_predictions(args.predictions, args.out, lookup)
    except (PredictionError, FileNotFoundError) as err:
        print(f"medsage eval score: {err}", file=sys.stderr)
        return 2
    for name, s in summary.items():
        print(f"{name:<12} n={s['n']:<6} accuracy={s['accuracy']}  unparsed={s['unparsed']}  "
              f"open recall={s['open_recall']}  closed-only={s['closed_only_accuracy']}  "
              f"MedEvalKit-compatible={s['medevalkit_accuracy']} ({s['medevalkit_differs']} items differ)")
    print(f"verdicts: {verdicts}\nsummary:  {summary_path}")
    return 0


def _judge(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="medsage eval judge",
                                     description="GPT-score (1-5) the reasoning in a predictions file (Table 2).")
    parser.add_argument("predictions", help="predictions.jsonl written by `medsage eval run`")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. eval.judge.base_url=... eval.judge.model=...")
    args = parser.parse_args(argv)
    from medsage.eval.judge import JudgeConfig, judge_items, summarize_judgements
    from medsage.eval.scoring import read_predictions
    from medsage.io import atomic_write_json, atomic_write_text
    from medsage.recipes import compose

    cfg = compose("eval", ["eval.data_root=unused", *args.overrides])
    judge = JudgeConfig.from_cfg(cfg.eval.judge)
    path = Path(args.predictions)
    items = read_predictions(path)
    verdicts = judge_items(items, judge)
    atomic_write_text(path.with_name(f"{path.stem}.judge.jsonl"),
                      "".join(json.dumps(v, ensure_ascii=False) + "\n" for v in verdicts))
    by_bench: dict[str, list] = {}
    for v in verdicts:
        by_bench.setdefault(v.get("benchmark") or "custom", []).append(v)
    summary = {b: summarize_judgements(vs, judge.dimensions) for b, vs in by_bench.items()}
    # Beside run.json (benchmark folder's parent) so `medsage report` finds it for Table 2.
    run_dir = path.parent.parent if (path.parent.parent / "run.json").exists() else path.parent
    judge_file = run_dir / "judge.json"
    merged = json.loads(judge_file.read_text()) if judge_file.exists() else {}
    atomic_write_json(judge_file, {**merged, **summary})
    for b, s in summary.items():
        dims = ", ".join(f"{d} {x['mean']} ({x['unparsed']} unparsed)" for d, x in s["dimensions"].items())
        print(f"{b}: {dims}")
    return 0


def _list(argv: list[str]) -> int:
    from medsage.registry import BENCHMARKS

    if argv[:1] == ["--check"]:  # `eval list --check ROOT` is `eval doctor ROOT`
        return _doctor(argv[1:])

    for name in BENCHMARKS.names():
        info = BENCHMARKS.get(name).info
        sizes = ", ".join(f"{k} {v}" for k, v in info.published_sizes.items()) or "—"
        print(f"{name:<12} {info.title:<11} types {'/'.join(info.question_types):<19} published: {sizes}\n"
              f"{'':<12} data: {info.published_at}")
    return 0


def _doctor(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="medsage eval doctor",
                                     description="Check every benchmark's downloaded files under ROOT: layout, split "
                                                 "counts against the published ones, repeats, missing images.")
    parser.add_argument("root", help="the eval.data_root folder (vqa_rad/, Slake1.0/, pathvqa/, PMC-VQA/, MMMU/, ...)")
    parser.add_argument("--benchmarks", default="paper_five", help="recipe groups (recipes/eval/benchmarks), comma-separated")
    parser.add_argument("--json", default=None, help="also write the report as JSON here")
    args = parser.parse_args(argv)
    from dataclasses import asdict

    from medsage.eval.doctor import diagnose, render
    from medsage.io import atomic_write_json

    reports = diagnose(args.root, tuple(g for g in args.benchmarks.split(",") if g))
    print(render(reports))
    if args.json:
        atomic_write_json(Path(args.json), [asdict(r) | {"ok": r.ok} for r in reports])
    return 0 if all(r.ok for r in reports) else 1


def _demo_benchmarks(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="medsage eval demo-benchmarks",
                                     description="Write small generated copies of the five Table 1 benchmarks, "
                                                 "in the layouts their releases use (for the demo).")
    parser.add_argument("out", help="data root to write vqa_rad/, Slake1.0/, pathvqa/, PMC-VQA/, MMMU/ into")
    args = parser.parse_args(argv)
    from medsage.launch.demo.benchmarks import make_demo_benchmarks

    print(f"generated benchmarks written to {make_demo_benchmarks(Path(args.out))}")
    return 0


VERBS = {"run": _run, "score": _score, "judge": _judge, "list": _list, "doctor": _doctor,
         "demo-benchmarks": _demo_benchmarks}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    if argv[0] not in VERBS:
        print(f"medsage eval: unknown sub-command {argv[0]!r}; expected one of {', '.join(VERBS)}\n\n{__doc__.strip()}",
              file=sys.stderr)
        return 2
    return VERBS[argv[0]](argv[1:])
