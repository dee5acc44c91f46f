"""`medsage rl` trains on CPU: verl 0.9.1's own trainer (RayPPOTrainer.fit, legacy path) with medsage's
self-check agent loop, reward and estimator, on the CPU route (medsage.plugins.engines.verl_cpu).

Each test is one real verl run of the tiny model (2 GRPO steps, 2 prompts x 2 rollouts; a few
minutes on 2 cores), so the assertions of a run are gathered in one test. Only
``tests/helpers/forced_check_loop.py`` is test-made: the random model never closes a check span.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("verl")
torch = pytest.importorskip("torch")
pytestmark = pytest.mark.slow

from rl_run import dumped, run_rl, write_rl_parquet  # noqa: E402  (tests/helpers)

from medsage.plugins.engines.verl import console_step_metrics  # noqa: E402


@pytest.fixture
def rl_parquet(tmp_path):
    return write_rl_parquet(tmp_path)


def train(tmp_path, model, data, *overrides, extra=()):
    out, rc, log = run_rl(tmp_path, model, data, *overrides, extra=extra)
    assert rc == 0, log[-8000:]
    return out, log


def test_rgrpo_trains_two_steps(tmp_path, tiny_model_dir, rl_parquet):
    from safetensors.torch import load_file
    from transformers import Qwen2_5_VLForConditionalGeneration

    from medsage.eval.view.load import load

    out, log = train(tmp_path, tiny_model_dir, rl_parquet, "rl.save_freq=2")
    steps = console_step_metrics(log)
    assert sorted(steps) == [1, 2], log[-4000:]
    s1, s2 = steps[1], steps[2]
    assert s1["medsage/self_check_rate"] > 0  # the random policy's τ1 is wrong: it retries
    assert {"medsage/tau1_truncation_rate", "medsage/tau2_truncation_rate"} <= set(s2)
    # the rollout server samples from the trained weights: verl's weight sync reached it
    assert s2["training/rollout_probs_diff_max"] < 1e-3
    # checkpoint with its Hugging Face folder, final_model linked to it and loadable
    final = out / "final_model"
    assert final.resolve() == (out / "checkpoints" / "global_step_2" / "actor" / "huggingface").resolve()
    assert Qwen2_5_VLForConditionalGeneration.from_pretrained(final) is not None
    # the weights as saved (a from_pretrained state_dict also holds tensors the files do not, initialised anew)
    start = load_file(str(tiny_model_dir / "model.safetensors"))
    trained = load_file(str(next(final.glob("*.safetensors"))))
    vision = [k for k in start if ".visual." in f".{k}"]
    assert vision and set(start) == set(trained)
    assert all(torch.equal(start[k], trained[k]) for k in vision)  # frozen (B.1)
    assert any(not torch.equal(start[k], trained[k]) for k in start if k not in vision)
    # verl's rollout dump, with medsage's spans, read by the viewer
    rows = dumped(out)
    assert len(rows) == 8 and all(r["medsage_spans"] for r in rows)
    items = load(out / "rollouts").items
    retried = [i for i in items if "self-check advantage" in i.details or len(i.traces) == 2]
    assert len(items) == 8 and all("advantage" in t.title for i in items for t in i.traces)
    assert all(i.details.get("spans") for i in items) and retried
    # main_ppo's Hydra run folder is inside the output folder; nothing was written where medsage was run
    assert (out / "hydra" / ".hydra" / "overrides.yaml").is_file() and not any((tmp_path / "cwd").iterdir())


def test_closed_checks_get_the_self_check_credit(tmp_path, tiny_model_dir, rl_parquet):
    import yaml

    loop_file = tmp_path / "forced_loop.yaml"
    loop_file.write_text(yaml.safe_dump([{"name": "medsage_self_check", "_target_": "forced_check_loop.ForcedCheckLoop",
                                          "tau1_max_tokens": 24, "tau2_max_tokens": 24,
                                          "request": "Check the answer."}]))
    val_dir = tmp_path / "validation"
    # its checkpoint of step 2 keeps no Hugging Face folder: verl exits 0, and medsage rl does not, having no
    # final_model to hand on
    out, rc, log = run_rl(tmp_path, tiny_model_dir, rl_parquet, "reward=accuracy", "rl.save_freq=2", "rl.alpha=0.35",
                          extra=[f"actor_rollout_ref.rollout.agent.agent_loop_config_path={loop_file}",
                                 "trainer.val_before_train=true", f"trainer.validation_data_dir={val_dir}",
                                 "actor_rollout_ref.actor.checkpoint.save_contents=[model,extra]"])
    assert rc == 1 and (out / "checkpoints" / "latest_checkpointed_iteration.txt").read_text().strip() == "2", log[-8000:]
    assert "there is no final_model: its last checkpoint (step 2) has no weights in actor/huggingface" in log, log[-3000:]
    steps = console_step_metrics(log)
    assert any(k.startswith("val-core/") for k in steps.pop(0)), log[-4000:]  # the validation before training
    assert any(s["actor/pg_loss"] != 0 for s in steps.values()), steps
    dump = dumped(out)
    rows = [dict((name, adv) for name, _, adv in r["medsage_spans"]) for r in dump]
    retried = [r for r in rows if "check" in r]
    assert retried, rows
    assert all(r["tau1"] == 0.0 for r in retried)                 # τ1 of a retry is never credited
    assert any(r["check"] == pytest.approx(0.35) for r in retried)  # α · r_sc on the check tokens (the estimator's α)
    if len({r["score"] for r in dump}) > 1:
        assert any(abs(r.get("tau2", 0.0)) > 0 for r in retried)  # GRPO's outcome advantage on τ2
    else:  # every revision was right: the batch-normalised outcome gives τ2 exactly 0, only the check is credited
        assert all(r.get("tau2", 0.0) == 0.0 for r in retried)
    assert any(s["medsage/correction_rate"] > 0 for s in steps.values())
    # the oracle-triggered retry's self-correction numbers, named apart from validation
    assert all({"medsage/oracle_retry/acc@t1", "medsage/oracle_retry/delta_i2c"} <= set(s) for s in steps.values())
    # validation answers once, as at deployment: this loop closes every check it opens, and no output has one
    val = [json.loads(line) for f in sorted(val_dir.glob("*.jsonl")) for line in f.read_text().splitlines()]
    assert len(val) == 8 and not any("CHECK>" in r["output"] for r in val), [r["output"] for r in val]


def test_plain_grpo_trains_two_steps(tmp_path, tiny_model_dir, rl_parquet):
    out, log = train(tmp_path, tiny_model_dir, rl_parquet, "rl=grpo", "rl.save_freq=-1")
    steps = console_step_metrics(log)
    assert sorted(steps) == [1, 2]
    assert all(s["medsage/self_check_rate"] == 0 for s in steps.values())
    assert "algorithm.adv_estimator=grpo" in (out / "verl_overrides.txt").read_text()
    assert steps[2]["training/rollout_probs_diff_max"] < 1e-3
    assert not (out / "final_model").exists() and "no checkpoint was saved (rl.save_freq=-1)" in log  # said, not found later
