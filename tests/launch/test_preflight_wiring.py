"""`medsage sft`, `medsage eval run` and `medsage rl` on a GPU recipe check their environment before they launch;
on this machine (no GPU) each launches nothing and fails with the fix, and a pipeline stage that launched
nothing is a failed stage that the rerun runs again. The probe is real: this interpreter is every stage's here.
(`medsage rl` itself: tests/plugins/test_rl_launch.py.)
"""

from __future__ import annotations

import json
import shutil

import pytest

pytestmark = pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="a GPU machine would launch the stage")


def test_sft_on_a_gpu_recipe_launches_nothing_and_says_why(tiny_sft_overrides, sft_schema_cache, tmp_path):
    from medsage.launch.sft import SftError, run_sft

    with pytest.raises(SftError) as failure:
        run_sft(tiny_sft_overrides("cluster=a100_1x", "sft.deepspeed=zero2"), quiet=True)
    message = str(failure.value)
    assert message.startswith("not launched: the SFT environment cannot run this recipe")
    assert "problem: sft: deepspeed is not installed, and the SFT recipe trains with DeepSpeed" in message
    assert "problem: sft: no CUDA device is visible to torch" in message
    assert "fix:     medsage env setup --stage sft --prefix envs, then set cluster.envs.sft=envs/sft" in message
    assert not list((tmp_path / "runs").glob("run_*"))  # no run folder, no manifest: nothing was started


def test_eval_run_on_a_gpu_recipe_launches_nothing_and_says_why(tmp_path, capsys):
    from medsage.eval.cli import main

    rc = main(["run", "model=tiny", f"model.path={tmp_path / 'model'}", "cluster=a100_4x", "eval/backend=vllm",
               f"eval.data_root={tmp_path}", f"eval.output_dir={tmp_path / 'out'}"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "medsage eval run: not launched" in err
    assert "problem: eval: vllm is not installed, and the eval backend is vllm" in err
    assert "problem: eval: no CUDA device is visible to torch" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_pipeline_stage_that_launched_nothing_failed_and_runs_again(tmp_path, tiny_model_dir):
    # A real embedded Ray cluster runs the RL stage as a job, as `medsage pipeline` does.
    from rl_run import write_rl_parquet

    from medsage.launch import layout
    from medsage.launch.pipeline.dag import plan_stages, run_stages
    from medsage.launch.pipeline.ray_jobs import ClusterStart

    spec = {"rl": {"argv": ["rl", "model=tiny", f"model.path={tiny_model_dir}", "cluster=a100_4x",
                            f"train_files={write_rl_parquet(tmp_path, repeat=2)}", "output_dir={out}"]}}
    cluster = ClusterStart(num_cpus=1)
    try:
        for attempt in (1, 2):
            (stage,) = plan_stages(spec, tmp_path / "store")
            (outcome,) = run_stages([stage], lambda: cluster, resume_hint="medsage pipeline ...")
            assert outcome.status == "failed", attempt  # never "done-before": the rerun ran it again
            manifest = json.loads((stage.out_dir / layout.STAGE).read_text())
            assert manifest["status"] == "failed" and manifest["exit_code"] == 1
            log = (stage.out_dir / layout.JOB_LOG).read_text()
            assert "medsage rl: not launched" in log and "medsage env setup --stage rl" in log
            assert not (stage.out_dir / "final_model").exists()
    finally:
        cluster.close()
