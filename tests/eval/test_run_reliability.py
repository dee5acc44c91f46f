"""`medsage eval run` when something is wrong around it: an image that does not decode, predictions left by another
item set, two runs into one folder, batch sizes that cannot be. The tiny model generates for real (transformers)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from medsage.eval.cli import main

from medsage.lock import folder_lock
from medsage.records import write_records


@pytest.fixture
def records_root(demo_samples, tmp_path):
    """Six of the demo's items as a records benchmark (records.jsonl beside the images)."""
    root = tmp_path / "demo"
    write_records(root / "records.jsonl", demo_samples[:6])
    return root, demo_samples[:6]


def _run(tiny, root, out, *extra) -> int:
    return main(["run", "model=tiny", f"model.path={tiny}", "eval/benchmarks=records", f"eval.data_root={root}",
                 f"eval.output_dir={out}", "eval.generation.max_new_tokens=4", "eval.batch_size=3", *extra])


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_an_unreadable_image_is_named_and_scored_wrong_and_retried_on_rerun(tiny_model_dir, records_root, tmp_path):
    root, samples = records_root
    image = Path(samples[1].images[0])
    original = image.read_bytes()
    image.write_bytes(original[: len(original) // 3])  # a truncated file: PIL fails at load
    out = tmp_path / "out"
    assert _run(tiny_model_dir, root, out) == 0  # the batch is not lost and nothing raises
    preds = _lines(out / "records" / "predictions.jsonl")
    assert len(preds) == 6
    bad = next(r for r in preds if r["id"] == samples[1].id)
    assert str(image) in bad["unreadable_image"] and bad["prediction"] is None
    assert all(r["prediction"] is not None for r in preds if r["id"] != samples[1].id)  # its batch was generated
    verdict = next(v for v in _lines(out / "records" / "predictions.verdicts.jsonl") if v["id"] == samples[1].id)
    assert not verdict["correct"] and verdict["reason"].startswith("image unreadable:")
    # The image is replaced: the rerun asks the model for that item only.
    image.write_bytes(original)
    assert _run(tiny_model_dir, root, out) == 0
    again = _lines(out / "records" / "predictions.jsonl")
    assert len(again) == 6 and not any("unreadable_image" in r for r in again)
    assert [r for r in again if r["id"] != samples[1].id] == [r for r in preds if r["id"] != samples[1].id]


def test_predictions_of_items_not_in_this_run_are_not_scored(tiny_model_dir, records_root, tmp_path):
    root, _ = records_root
    out = tmp_path / "out"
    assert _run(tiny_model_dir, root, out, "eval.limit=4") == 0
    assert _run(tiny_model_dir, root, out, "eval.limit=2") == 0
    summary = json.loads((out / "records" / "predictions.summary.json").read_text())
    overall = next(iter(summary.values()))
    assert overall["n"] == 2 and overall["not_in_run"] == 2
    assert len(_lines(out / "records" / "predictions.jsonl")) == 4  # kept on disk, only not scored


def test_a_second_run_into_a_folder_in_use_stops_at_once(tiny_model_dir, records_root, tmp_path, capsys):
    root, _ = records_root
    out = tmp_path / "out"
    with folder_lock(out, "evaluation"):  # a real flock, as a running evaluation holds it
        assert _run(tiny_model_dir, root, out) == 2
    assert "in use by another evaluation" in capsys.readouterr().err
    assert not (out / "records").exists()


@pytest.mark.parametrize("size", [0, -1])
def test_a_batch_size_below_one_is_refused_before_anything_runs(tiny_model_dir, records_root, tmp_path, capsys, size):
    root, _ = records_root
    assert _run(tiny_model_dir, root, tmp_path / "out", f"eval.batch_size={size}") == 2
    assert f"eval.batch_size={size}: must be 1 or more" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _copy_model(tiny, dest: Path, drop: tuple[str, ...] = ()) -> Path:
    import shutil

    shutil.copytree(tiny, dest)
    for name in drop:
        (dest / name).unlink()
    return dest


@pytest.mark.parametrize("case,expected", [
    ("empty", "model.path is empty"),
    ("missing", "no such folder"),
    ("no processor", "not a model folder: missing an image processor (preprocessor_config.json or processor_config.json)"),
    ("text-only", "a text-only model"),
    ("verl actor", "a verl checkpoint folder; its Hugging Face model is"),
])
def test_a_model_folder_that_cannot_load_is_named_before_any_engine(tiny_model_dir, records_root, tmp_path, capsys,
                                                                     case, expected):
    root, _ = records_root
    if case == "empty":
        path = "''"
    elif case == "missing":
        path = str(tmp_path / "nowhere")
    elif case == "no processor":
        names = [n for n in ("preprocessor_config.json", "processor_config.json") if (tiny_model_dir / n).exists()]
        path = str(_copy_model(tiny_model_dir, tmp_path / "m", tuple(names)))
    elif case == "text-only":
        folder = _copy_model(tiny_model_dir, tmp_path / "m")
        config = json.loads((folder / "config.json").read_text())
        config.pop("vision_config")
        (folder / "config.json").write_text(json.dumps(config))
        path = str(folder)
    else:
        _copy_model(tiny_model_dir, tmp_path / "ckpt" / "actor" / "huggingface")
        path = str(tmp_path / "ckpt")
    code = main(["run", "model=tiny", f"model.path={path}", "eval/benchmarks=records", f"eval.data_root={root}",
                 f"eval.output_dir={tmp_path / 'out'}"])
    err = capsys.readouterr().err
    assert code == 2 and expected in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
