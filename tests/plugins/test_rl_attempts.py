"""`medsage rl` rerun after an interruption: the metrics of earlier attempts survive verl's logger, and a run
whose last checkpoint is its last step is not trained one step further."""

from __future__ import annotations

import pytest

pytest.importorskip("verl")

from rl_run import TINY_RL, write_rl_parquet  # noqa: E402

from medsage.eval.report.tables import training_mean  # noqa: E402
from medsage.launch import rl as rl_launch  # noqa: E402
from medsage.launch.rl_metrics import METRICS, keep_earlier_attempt, read_steps  # noqa: E402


def _log_steps(path, steps, monkeypatch, rate):
    """verl's own file logger, as its trainer uses it (it opens the file with "wb")."""
    from verl.utils.tracking import FileLogger

    monkeypatch.setenv("VERL_FILE_LOGGER_PATH", str(path))
    logger = FileLogger("medsage", "test")
    for step in steps:
        logger.log({"medsage/self_check_rate": rate, "step_tag": step}, step)
    logger.finish()


def test_a_resumed_runs_metrics_keep_the_steps_before_the_interruption(tmp_path, monkeypatch):
    out = tmp_path / "rl"
    out.mkdir()
    _log_steps(out / METRICS, [1, 2, 3], monkeypatch, rate=0.5)  # killed after step 3, checkpoint at step 2
    assert keep_earlier_attempt(out).name == "metrics.attempt-001.jsonl"
    _log_steps(out / METRICS, [3, 4], monkeypatch, rate=0.25)  # the rerun resumes from step 2
    steps = read_steps(out / METRICS)
    assert list(steps) == [1, 2, 3, 4]
    assert [steps[s]["medsage/self_check_rate"] for s in steps] == [0.5, 0.5, 0.25, 0.25]  # step 3: the rerun's
    assert training_mean({"tags": {"train_metrics": str(out / METRICS)}}, "medsage/self_check_rate") == 37.5
    assert keep_earlier_attempt(out).name == "metrics.attempt-002.jsonl"  # a third attempt keeps both
    assert keep_earlier_attempt(out) is None  # nothing to keep: no file


def test_a_run_checkpointed_at_its_last_step_is_linked_not_trained_again(tmp_path, tiny_model_dir, capsys):
    out = tmp_path / "run"
    hf = out / "checkpoints" / "global_step_2" / "actor" / "huggingface"
    hf.mkdir(parents=True)
    (hf / "config.json").write_text("{}")
    (hf / "model.safetensors").write_bytes(b"")
    (out / "checkpoints" / "latest_checkpointed_iteration.txt").write_text("2")  # killed before the final link
    rc = rl_launch.main(["model=tiny", f"model.path={tiny_model_dir}", "cluster=local_cpu",
                         f"train_files={write_rl_parquet(tmp_path)}", f"output_dir={out}", *TINY_RL,
                         "extra_overrides=['trainer.total_training_steps=2']"])
    printed = capsys.readouterr().out
    assert rc == 0 and "already trained: checkpoint of step 2 of 2; not launched again" in printed
    assert (out / "final_model").resolve() == hf.resolve()
    assert not (out / "verl.log").exists()  # verl never started (it would have trained a step 3)
