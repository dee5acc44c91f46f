"""Resume notices changed inputs, a rerun keeps the dataset's total cost, one run per output folder, and
files honour the umask."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import synth_server as H  # tests/helpers (pytest pythonpath)
from PIL import Image

from medsage.data_pipeline.cli import main as data_main
from medsage.data_pipeline.run import PAUSE_ENV
from medsage.lock import LOCK_NAME, folder_lock


def _args(kind: str, root: Path, out: Path, shard_size: int = 3) -> list[str]:
    return ["run", f"out_dir={out}", f"shard_size={shard_size}", f"sources=[{{name: {kind}, root: '{root}'}}]",
            "dedup.within_train=false", "write.verl=false", "write.easyr1=false"]


def _rejected(out: Path) -> dict[str, dict]:
    return {r["key"]: r for r in map(json.loads, (out / "rejected.jsonl").read_text().splitlines())}


# --------------------------------------------------------------------------------------------
# 11. Shard fingerprints by content
# --------------------------------------------------------------------------------------------


def test_fixing_a_bad_csv_row_and_rerunning_rereads_that_shard(tmp_path, deeplesion_root, capsys):
    out = tmp_path / "out"
    assert data_main(_args("deeplesion", deeplesion_root, out)) == 0
    bad_key = next(k for k, r in _rejected(out).items() if "needs 4 numbers" in r["detail"])
    capsys.readouterr()
    path = deeplesion_root / "DL_info.csv"
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    line = int(bad_key[3:])
    rows[line - 2]["Bounding_boxes"] = "10.0, 10.0, 30.0, 30.0"  # the fix
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert data_main(_args("deeplesion", deeplesion_root, out)) == 0
    assert "1 shard(s) computed, 4 reused" in capsys.readouterr().out  # only the fixed row's shard
    assert bad_key not in _rejected(out)
    assert any(json.loads(x)["metadata"]["input_key"] == bad_key for x in (out / "records.jsonl").read_text().splitlines())


def test_a_replaced_image_is_read_again(tmp_path, deeplesion_root, capsys):
    out = tmp_path / "out"
    assert data_main(_args("deeplesion", deeplesion_root, out)) == 0
    record = json.loads((out / "records.jsonl").read_text().splitlines()[0])
    converted = Path(record["images"][0])
    before = converted.read_bytes()
    source = deeplesion_root / "Images_png" / "000001_01_01" / f"{record['metadata']['file_name'][-7:]}"
    other = np.full((128, 128), 32768 + 100, dtype=np.uint16)
    other[:, ::4] = 32768 - 500
    time.sleep(0.01)  # a new mtime even on coarse clocks
    Image.fromarray(other).save(source)
    capsys.readouterr()
    assert data_main(_args("deeplesion", deeplesion_root, out)) == 0
    assert "1 shard(s) computed" in capsys.readouterr().out
    assert converted.read_bytes() != before  # the converted slice follows its source


# --------------------------------------------------------------------------------------------
# 12. Dataset total cost across reruns
# --------------------------------------------------------------------------------------------


def test_a_rerun_keeps_the_dataset_cost_beside_its_own(tmp_path, demo_samples):
    from medsage.data_pipeline.synthesis.prompts import load_prompts
    from medsage.data_pipeline.synthesis.run import run_synthesis
    from medsage.records import RoI
    from medsage.recipes import compose
    from omegaconf import OmegaConf

    for s in demo_samples[:2]:
        s.trajectory = None
        s.rois = [RoI("global", box=(0, 0, 112, 112), label="full image", origin="global")]
    overrides = ["synthesizer=llm", "client.model=scripted", "client.backoff_s=0.01", "rpa.max_templates=1",
                 "client.price_prompt_per_1k=1.0", "client.price_completion_per_1k=2.0"]
    with H.LoopbackServer(H.LvkcScript(load_prompts("synthesis/prompts.yaml"))) as server:
        cfg = OmegaConf.to_container(compose("synthesis/default", [f"client.base_url={server.base_url}", *overrides]))
        first = run_synthesis(demo_samples[:2], cfg, tmp_path / "out").report
        again = run_synthesis(demo_samples[:2], cfg, tmp_path / "out").report
    assert first["calls_made"] > 0 and again["calls_made"] == 0 and again["cost"] == 0
    assert again["dataset_total"] == first["dataset_total"]
    assert first["dataset_total"]["cost"] == pytest.approx(first["cost"]) and first["dataset_total"]["tokens"] > 0
    on_disk = json.loads((tmp_path / "out" / "report.json").read_text())
    assert on_disk["dataset_total"]["cost"] == first["dataset_total"]["cost"]


# --------------------------------------------------------------------------------------------
# 13. One run per output folder
# --------------------------------------------------------------------------------------------


def test_a_second_data_run_into_a_busy_folder_stops_at_once(tmp_path, deeplesion_root):
    out = tmp_path / "out"
    first = subprocess.Popen([sys.executable, "-m", "medsage.launch.cli", "data", *_args("deeplesion", deeplesion_root,
                              out, shard_size=1)], env={**os.environ, PAUSE_ENV: "0.5"},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while not (out / LOCK_NAME).exists() or not (out / LOCK_NAME).read_text().strip():
            assert time.time() < deadline and first.poll() is None
            time.sleep(0.1)
        started = time.time()
        second = subprocess.run([sys.executable, "-m", "medsage.launch.cli", "data",
                                 *_args("deeplesion", deeplesion_root, out, shard_size=1)],
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 2 and f"pid {first.pid}" in second.stderr and "in use by another data run" in second.stderr
        assert first.poll() is None  # it exited while the first one was still running
        assert time.time() - started < 60
    finally:
        first.kill()
        first.wait()


def test_a_second_synthesis_run_is_refused_and_pays_nothing(tmp_path, demo_samples, capsys):
    from medsage.data_pipeline.synthesis.cli import main
    from medsage.records import write_records

    records = write_records(tmp_path / "pool.jsonl", demo_samples[:2])
    calls = []
    with H.LoopbackServer(lambda body, headers: calls.append(1) or (200, H.completion("x"), 0.0)) as server:
        with folder_lock(tmp_path / "out", "synthesis run"):
            code = main(["run", "--records", str(records), "--out", str(tmp_path / "out"), "synthesizer=llm",
                         f"client.base_url={server.base_url}", "client.model=scripted"])
    assert code == 2 and "in use by another synthesis run" in capsys.readouterr().err and not calls


def test_a_stale_lock_from_a_dead_process_is_broken_with_a_message(tmp_path, coco_root, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "what": "data run",
                                             "started": "earlier"}))
    assert data_main(_args("roboflow_coco", coco_root, out)) == 0
    err = capsys.readouterr().err
    assert "breaking a stale lock" in err and f"pid {dead.pid}" in err
    assert (out / LOCK_NAME).read_text() == ""  # released at the end


# --------------------------------------------------------------------------------------------
# 14. The umask
# --------------------------------------------------------------------------------------------


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_outputs_and_the_viewer_honour_the_umask(tmp_path, coco_root, umask_022):
    from medsage.eval.view.build import main as view_main

    out = tmp_path / "out"
    assert data_main(_args("roboflow_coco", coco_root, out)) == 0
    for name in ("records.jsonl", "rejected.jsonl", "summary.json"):
        assert (out / name).stat().st_mode & 0o777 == 0o644, name
    assert view_main([str(out), "--out", str(tmp_path / "view")]) == 0
    assert (tmp_path / "view" / "index.html").stat().st_mode & 0o777 == 0o644
    os.umask(0o077)
    assert data_main(_args("roboflow_coco", coco_root, tmp_path / "private")) == 0
    assert (tmp_path / "private" / "records.jsonl").stat().st_mode & 0o777 == 0o600
