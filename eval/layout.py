"""What ``medsage eval run`` writes into ``eval.output_dir``, by name: the report, the judge, the viewer and
the pipeline find an evaluation run through these names.

    run.json                               label, model, backend, tags, per-benchmark summaries
    <benchmark>/predictions.jsonl          one generated answer per item (appended batch by batch)
    <benchmark>/predictions.blind.jsonl    the same with every image blank (eval.blind=true), scored beside it
    <benchmark>/predictions.setup.json     the setup a resumed run must match
    <benchmark>/predictions.verdicts.jsonl, .summary.json, .judge.jsonl   scoring and judging beside it
    <benchmark>/predictions.retry.jsonl, .retry_verdicts.jsonl   the answer-key retry's second attempts (eval/retry.py)
    judge.json                             LLM-judge means per benchmark (Table 2), beside run.json
"""

from __future__ import annotations

from pathlib import Path

RUN = "run.json"
PREDICTIONS = "predictions.jsonl"
BLIND_PREDICTIONS = "predictions.blind.jsonl"
JUDGE = "judge.json"


def predictions_file(run_dir: Path, benchmark: str, blind: bool = False) -> Path:
    return run_dir / benchmark / (BLIND_PREDICTIONS if blind else PREDICTIONS)


def beside(predictions: Path, kind: str) -> Path:
    """A file written next to a predictions file: ``kind`` is ``verdicts.jsonl``, ``summary.json``, ..."""
    return predictions.with_name(f"{predictions.stem}.{kind}")


def run_dir_of(predictions: Path) -> Path:
    """The evaluation run a predictions file belongs to: the folder holding ``run.json`` above its
    benchmark folder, else (a loose predictions file) the file's own folder."""
    run_dir = predictions.parent.parent
    return run_dir if (run_dir / RUN).exists() else predictions.parent
