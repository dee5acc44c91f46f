"""What ``medsage view`` reads: ``load(path)`` detects the kind of file and hands it to its reader
(records.py: data and SFT files; rollouts.py: RL rollout dumps; predictions.py: evaluation output),
each of which turns it into the one item shape of items.py.

What ``medsage view PATH`` understands (``load`` detects the kind; anything else is an error naming
the file and what was looked for):

- an SFT data file: LLaVA/ShareGPT JSON (``data_pipeline.writers``: ``conversations`` from human/gpt,
  ``images``); records beside it (``../records.jsonl`` or ``../kept.jsonl``) add source, modality and
  ground truth by id;
- a pipeline run directory: ``medsage data run`` (``records.jsonl`` kept, ``rejected.jsonl`` rejections
  with reason and detail, ``summary.json``) or the synthesis run (``kept.jsonl``, ``rejected.jsonl``
  records with ``rejection`` and their failed attempts, ``report.json``), or one such JSON-lines file;
- an RL rollout dump: medsage's rollout JSON lines (``rollouts.ROLLOUT_FIELDS``), verl's own
  ``trainer.rollout_data_dir`` files (``<step>.jsonl`` with input/output/gts/score/step and the reward
  components), or a directory of either;
- evaluation output: a predictions file (``eval.run``; verdicts from ``<stem>.verdicts.jsonl`` beside
  it, else scored here with ``eval.scoring``), a verdicts file (joined with its predictions file), or
  the run directory (``run.json``, ``<benchmark>/predictions.jsonl``).

Every trajectory is read with ``medsage.scaffold`` (lenient stages, strict issues, the self-check
split, the ``<LOC>`` regions). A malformed item (bad JSON line, unparseable stage, invalid region,
missing image) becomes an item whose ``problems`` name what is wrong; nothing is dropped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medsage.data_pipeline import layout as data_layout
from medsage.eval import layout as eval_layout
from medsage.eval.view.items import Loaded, ViewerInputError, ViewItem, first_object, image_info
from medsage.eval.view.predictions import is_prediction, is_verdict, predictions_file, verdicts_file, verdicts_for
from medsage.eval.view.records import is_rejection, is_sample, records_file, sft_file
from medsage.eval.view.rollouts import ROLLOUT_FIELDS, is_rollout, is_verl_dump, rollout_file, rollout_record

__all__ = ["ROLLOUT_FIELDS", "Loaded", "ViewItem", "ViewerInputError", "load", "load_benchmarks", "rollout_record"]


# --------------------------------------------------------------------------------------------
# Detection
# --------------------------------------------------------------------------------------------


def load_benchmarks(specs: dict[str, str]) -> dict[tuple[str, str], Any]:
    """``--data NAME=PATH``: benchmark items by (name, id), for the images predictions files omit."""
    from medsage.eval.benchmarks.base import load_benchmark

    out = {}
    for name, path in specs.items():
        for s in load_benchmark(name, path):
            out[(name, s.id)] = s
    return out


def _file_kind(path: Path) -> str:
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ViewerInputError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
        if isinstance(data, list) and (not data or isinstance(data[0], dict) and "conversations" in data[0]):
            return "sft"
        hint = " (dataset_info.json: pass the data file it names)" if path.name == "dataset_info.json" else ""
        raise ViewerInputError(f"{path}: a JSON file medsage view knows is an SFT data file, a list of "
                               f"{{conversations, images}} examples{hint}")
    first = first_object(path)
    if first is None:
        raise ViewerInputError(f"{path}: no JSON object on any line; expected records, rejections, rollouts, "
                               "predictions or verdicts as JSON lines")
    if is_prediction(first):
        return "predictions"
    if is_verdict(first):
        return "verdicts"
    if is_rollout(first) or is_verl_dump(first):
        return "rollouts"
    if is_sample(first) or is_rejection(first):
        return "records"
    raise ViewerInputError(
        f"{path}: first line has keys {sorted(first)[:15]}, which is none of: a record (question, question_type, "
        "images), a rejection (source, key, reason), a rollout (response, ground_truth; or verl's input, output, "
        "gts, score, step), a prediction (prediction) or a verdict (correct, reason, reference, extracted_how)")


def load(path: str | Path, data: dict[str, str] | None = None) -> Loaded:
    """Read PATH, whatever of the project's outputs it is (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise ViewerInputError(f"{path}: no such file or directory")
    benchmarks = load_benchmarks(data) if data else {}
    image_info.cache_clear()  # images may have changed since an earlier load in this process
    try:
        return _load(path, benchmarks)
    except UnicodeDecodeError:
        raise ViewerInputError(f"{path}: not UTF-8 text; medsage view reads JSON and JSON-lines files "
                               "(an RL parquet file is training input, not a rollout dump)") from None


def _load(path: Path, benchmarks: dict) -> Loaded:
    if path.is_dir():
        return _load_dir(path, benchmarks)
    kind = _file_kind(path)
    if kind == "sft":
        return Loaded("SFT data file (LLaVA JSON)", path, sft_file(path))
    if kind == "records":
        return Loaded("records / rejections (JSON lines)", path, records_file(path))
    if kind == "rollouts":
        return Loaded("RL rollout dump", path, rollout_file(path))
    if kind == "predictions":
        notes = [f"verdicts from {verdicts_for(path)}"] if verdicts_for(path).is_file() else \
            ["no verdicts file beside: scored here with medsage.eval.scoring"]
        return Loaded("evaluation predictions", path, predictions_file(path, benchmarks), notes)
    items, notes = verdicts_file(path, benchmarks)
    return Loaded("evaluation verdicts", path, items, notes)


def _load_dir(path: Path, benchmarks: dict) -> Loaded:
    if (path / data_layout.KEPT).is_file():  # synthesis run
        files = [f for f in (path / data_layout.KEPT, path / data_layout.REJECTED) if f.is_file()]
        return Loaded("synthesis run (kept / rejected trajectories)", path,
                      [it for f in files for it in records_file(f)], [f"read {f.name}" for f in files])
    if (path / data_layout.RECORDS).is_file() or (path / data_layout.SUMMARY).is_file():  # data run
        files = [f for f in (path / data_layout.RECORDS, path / data_layout.REJECTED) if f.is_file()]
        return Loaded("pipeline run (kept records / rejections)", path,
                      [it for f in files for it in records_file(f)], [f"read {f.name}" for f in files])
    predictions = sorted(path.glob(f"*/{eval_layout.PREDICTIONS}")) + sorted(path.glob(eval_layout.PREDICTIONS))
    if predictions:  # evaluation run
        items = [it for p in predictions for it in predictions_file(p, benchmarks)]
        return Loaded("evaluation run", path, items, [f"read {p.relative_to(path)}" for p in predictions])
    dumps = sorted(path.glob("*.jsonl"), key=lambda p: (not p.stem.isdigit(), int(p.stem) if p.stem.isdigit() else 0, p.name))
    if dumps and all(_file_kind(p) == "rollouts" for p in dumps):
        items = [it for p in dumps for it in rollout_file(p)]
        return Loaded("RL rollout dump directory", path, items, [f"read {len(dumps)} file(s)"])
    raise ViewerInputError(
        f"{path}: a directory medsage view knows holds kept.jsonl (synthesis run), records.jsonl or summary.json "
        "(data run), <benchmark>/predictions.jsonl (evaluation run) or rollout JSON lines (<step>.jsonl)")
