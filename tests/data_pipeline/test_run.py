"""`medsage data run` end to end from the recipe: every input accounted for, eval leaks removed, and a run
killed with SIGKILL mid-way then rerun ends byte-identical to an uninterrupted run without redoing shards."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from medsage.data_pipeline.run import PAUSE_ENV


@pytest.fixture
def sources(tmp_path, make_source):
    roots = {kind: make_source(kind, tmp_path / "raw" / kind) for kind in
             ("deeplesion", "roboflow_coco", "roboflow_yolo", "pubmedvision")}
    make_source("deeplesion", roots["deeplesion"], defects=True)
    # The eval set holds a re-encoded, downsized copy of one PubMedVision image: it must not be trained on.
    evals = tmp_path / "eval_images"
    evals.mkdir()
    Image.open(roots["pubmedvision"] / "images" / "pmc_1.jpg").resize((60, 60)).save(evals / "leak.png")
    return roots, evals


def _overrides(roots, evals, out, shard_size):
    listed = ", ".join(f"{{name: {k}, root: '{v}'}}" for k, v in roots.items())
    return [f"out_dir={out}", f"shard_size={shard_size}", f"sources=[{listed}]", f"dedup.eval_dirs=['{evals}']",
            "dedup.workers=1", "write.easyr1_format=parquet"]


def _cmd(args):
    return [sys.executable, "-m", "medsage.launch.cli", "data", "run", *args]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_run_accounts_for_every_input_and_removes_eval_leaks(sources, tmp_path):
    from medsage.data_pipeline.cli import main

    roots, evals = sources
    out = tmp_path / "out"
    assert main(["run", *_overrides(roots, evals, out, 4)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    per = summary["sources"]
    assert per["deeplesion"]["inputs"] == 15 and per["roboflow_coco"]["inputs"] == 8
    for entry in per.values():
        assert entry["kept"] + entry["rejected"] == entry["inputs"] == entry["kept"] + sum(entry["rejected_by_reason"].values())
    assert per["pubmedvision"]["rejected_by_reason"] == {"dedup-eval-leak": 1, "unreadable-image": 1}
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    assert len(records) == summary["kept"] and len(rejected) == summary["rejected"]
    leak = next(r for r in rejected if r["reason"] == "dedup-eval-leak")
    assert leak["images"][0].endswith("pmc_1.jpg") and "leak.png" in leak["detail"]
    assert not any(r["id"] == "pubmedvision-0000001-pmc1" for r in records)
    removed = [json.loads(line) for line in (out / "dedup" / "removed.jsonl").read_text().splitlines()]
    assert removed[0]["nearest"].endswith("leak.png") and removed[0]["distance"] <= 10
    import pyarrow.parquet as pq

    assert pq.read_table(out / "rl" / "verl.parquet").num_rows == len(records)
    assert pq.read_table(out / "rl" / "easyr1.parquet").num_rows == len(records)
    assert summary["written"]["sft_examples"] == 0  # no trajectories yet: synthesis is the next stage


def test_recipe_needs_the_source_roots(tmp_path, capsys):
    from medsage.data_pipeline.cli import main

    assert main(["run", f"out_dir={tmp_path}"]) == 2
    assert "sources.0.root" in capsys.readouterr().err


@pytest.mark.slow
def test_kill_and_resume_is_byte_identical(sources, tmp_path):
    roots, evals = sources
    out = tmp_path / "run"
    env = {**os.environ, PAUSE_ENV: "0"}
    subprocess.run(_cmd(_overrides(roots, evals, out, 1)), check=True, env=env, capture_output=True)
    reference = _snapshot(out)
    assert "summary.json" in reference and "rl/verl.parquet" in reference
    shutil.rmtree(out)

    # Same command, slowed down between shards so SIGKILL lands in the middle of the ingest.
    proc = subprocess.Popen(_cmd(_overrides(roots, evals, out, 1)), env={**os.environ, PAUSE_ENV: "0.4"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    markers = out / "steps" / "ingest" / "deeplesion"
    deadline = time.time() + 120
    while len(list(markers.glob("*.done"))) < 4 and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = {p: p.stat().st_mtime_ns for p in out.rglob("shard-*.records.jsonl")}
    assert 4 <= len(done_before) < 33, "the kill must land mid-way"
    assert not (out / "summary.json").exists()
    (out / "steps" / ".records.jsonl.abc.tmp").write_text("half")  # what a kill inside a write leaves

    subprocess.run(_cmd(_overrides(roots, evals, out, 1)), check=True, env=env, capture_output=True)
    assert _snapshot(out) == reference
    # Finished shards were not redone.
    assert {p: p.stat().st_mtime_ns for p in done_before} == done_before


def test_rerun_reuses_shards_and_a_changed_setting_recomputes(tmp_path, make_source, capsys):
    from medsage.data_pipeline.cli import main

    root = make_source("roboflow_yolo", tmp_path / "yolo")
    args = ["ingest", "--source", "roboflow_yolo", "--root", str(root), "--out", str(tmp_path / "o"), "--shard-size", "2"]
    assert main(args) == 0
    first = (tmp_path / "o" / "records.jsonl").read_bytes()
    assert main(args) == 0
    assert "0 shard(s) computed, 3 reused" in capsys.readouterr().out
    assert (tmp_path / "o" / "records.jsonl").read_bytes() == first
    assert main([*args, "--seed", "5"]) == 0  # different RoI draws: every shard is redone
    assert "3 shard(s) computed, 0 reused" in capsys.readouterr().out
    assert (tmp_path / "o" / "records.jsonl").read_bytes() != first
    # Another shard size: the old, smaller shards on disk are not merged in again.
    assert main([*args[:-1], "4"]) == 0
    assert (tmp_path / "o" / "records.jsonl").read_bytes() == first


def test_write_turns_records_with_trajectories_into_an_sft_dataset(tmp_path, demo_samples):
    from medsage.data_pipeline.cli import main
    from medsage.records import write_records

    write_records(tmp_path / "records.jsonl", demo_samples)
    assert main(["write", "--records", str(tmp_path / "records.jsonl"), "--out", str(tmp_path / "w")]) == 0
    info = json.loads((tmp_path / "w" / "sft" / "dataset_info.json").read_text())
    assert info["sage_sft"]["file_name"] == "sage_sft.json"
    examples = json.loads((tmp_path / "w" / "sft" / "sage_sft.json").read_text())
    assert len(examples) == len(demo_samples) and examples[0]["conversations"][1]["value"].startswith("<LOC>")


def test_data_recipes_compose_and_document_every_field():
    from omegaconf import OmegaConf

    from medsage.data_pipeline.run import RunConfig
    from medsage.recipes import compose, recipes_dir

    for path in sorted((recipes_dir() / "data").glob("*.yaml")):
        lines = path.read_text().splitlines()
        assert lines[1].startswith("# ") and "medsage data run" in "\n".join(lines[:8]), f"{path}: command comment"
        undocumented = [line for line in lines if line.strip() and not line.lstrip().startswith("#") and "#" not in line]
        assert not undocumented, f"{path}: fields without a comment: {undocumented}"
        cfg = compose(f"data/{path.stem}", ["out_dir=/tmp/x"])
        plain = OmegaConf.to_container(cfg, resolve=False)
        for source in plain["sources"]:
            source["root"] = "/data"
        RunConfig.from_dict(plain)  # every key is one the run knows


def test_synth_subcommand_is_part_of_the_data_tree(capsys):
    from medsage.data_pipeline.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["synth", "--help"])
    assert exit_.value.code == 0 and "medsage data synth" in capsys.readouterr().out
