"""An output path that cannot be written (a file where a folder should be) is one clear line naming the path for
every verb, never a traceback. (Read-only folders do not stop root, who runs the tests; a file in the way fails
the same way for everyone.)"""

from __future__ import annotations

import pytest

from medsage.launch.cli import main
from medsage.launch.demo.sources import make_roboflow_yolo
from medsage.records import write_records


@pytest.fixture
def in_the_way(tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the output folder should be\n")
    return blocker


def _check(capsys, code: int, blocker) -> None:
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and str(blocker) in err
    assert "choose another output folder" in err


def test_eval_run(tiny_model_dir, demo_samples, tmp_path, in_the_way, capsys):
    write_records(tmp_path / "demo" / "records.jsonl", demo_samples[:2])
    code = main(["eval", "run", "model=tiny", f"model.path={tiny_model_dir}", "eval/benchmarks=records",
                 f"eval.data_root={tmp_path / 'demo'}", f"eval.output_dir={in_the_way / 'eval'}"])
    _check(capsys, code, in_the_way)


def test_rl(tiny_model_dir, tmp_path, in_the_way, capsys):
    code = main(["rl", "model=tiny", f"model.path={tiny_model_dir}", "cluster=local_cpu",
                 f"train_files={tmp_path / 'train.parquet'}", f"output_dir={in_the_way}"])
    _check(capsys, code, in_the_way)


def test_sft(tiny_sft_overrides, sft_schema_cache, in_the_way, capsys):
    code = main(["sft", *tiny_sft_overrides(out_dir=in_the_way / "runs")])
    _check(capsys, code, in_the_way)


def test_data_ingest(tmp_path, in_the_way, capsys):
    root = make_roboflow_yolo(tmp_path / "yolo")
    code = main(["data", "ingest", "--source", "roboflow_yolo", "--root", str(root), "--out", str(in_the_way / "d")])
    _check(capsys, code, in_the_way)


def test_view(demo_samples, tmp_path, in_the_way, capsys):
    records = write_records(tmp_path / "demo" / "records.jsonl", demo_samples[:2])
    code = main(["view", str(records), "--out", str(in_the_way / "view")])
    _check(capsys, code, in_the_way)
