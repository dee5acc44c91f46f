"""Reward plugins: format, accuracy, consistency, self_check, the composite and its normalisation."""

from __future__ import annotations

import pytest

from medsage.plugins.rewards import RewardInput, build_reward, reward_input_from_row
from medsage.plugins.rewards.composite import CompositeReward
from medsage.plugins.rewards.consistency import RuleScorer
from medsage.registry import REWARDS, RegistryError
from medsage.scaffold import parse_lenient, render, render_check

BOX = '{"box_2d": [300, 420, 520, 610], "label": "bright lesion"}'


def traj(answer="yes", loc=BOX, vis="A bright lesion with smooth margins.", know="Bright foci fit a lesion.",
         con="A lesion is present, so yes."):
    return render(loc, vis, know, con, answer)


def item(response, gt="yes", qtype="closed", options=None):
    return RewardInput(response=response, ground_truth=gt, question_type=qtype, options=options)


def test_builtins_are_entry_points():
    assert {"format", "accuracy", "consistency", "self_check", "composite"} <= set(REWARDS.names())
    with pytest.raises(RegistryError, match="Did you mean 'accuracy'"):
        build_reward("acuracy")


@pytest.mark.parametrize("text, expected", [
    (traj(), 1.0),
    (traj(loc="the left lower lobe"), 1.0),                            # a textual region is a region (A.3.1)
    ("This is an axial CT of the abdomen.\n" + traj(), 1.0),           # Figure 12's free-text preamble
    (traj(loc="- 1 -"), 0.0),                                          # no region at all: key information missing
    (traj() + " Hope this helps.", 0.0),                               # text after the scaffold
    (traj(loc='{"box_2d": [300, 420]}'), 0.0),                          # invalid region
    (traj().replace("<VISUAL>", "").replace("</VISUAL>", ""), 0.0),     # missing stage
    (traj().replace("<CON>A lesion is present, so yes.</CON>", "<CON> </CON>"), 0.0),  # empty stage
    (traj() + "<ANSWER>no</ANSWER>", 0.0),                              # two answers
    ("Yes.", 0.0),                                                      # no scaffold at all
    ("<LOC>" + BOX + "<VISUAL>x</VISUAL>", 0.0),                        # truncated / unclosed
])
def test_format(text, expected):
    assert build_reward("format")(item(text))["overall"] == expected


REFERENCE = {"loc": BOX, "vis": "A bright lesion with smooth margins.", "know": "Bright foci fit a lesion.",
             "con": "A lesion is present, so yes.", "answer": "yes"}


def test_format_checks_each_stages_key_information_against_the_reference():
    """A.4: the reference segmented into stages; a stage keeps its key information when it shares a finding
    word with the reference's same stage (the <LOC> label or anatomy, the visual finding, ...)."""
    fmt = build_reward("format", {"key_info": 0.5})

    def score(text, reference=REFERENCE):
        return fmt(RewardInput(response=text, ground_truth="yes", question_type="closed",
                               extra={"reference": reference}))["overall"]

    assert score(traj()) == 1.0                                        # every stage keeps it
    other_region = '{"box_2d": [300, 420, 520, 610], "label": "spleen"}'
    assert score(traj(loc=other_region)) == 0.5 + 0.5 * 3 / 4          # <LOC> names another region
    assert score(traj(loc="the left lower lobe", vis="Nothing of note.", know="Organs vary.",
                      con="So yes.")) == 0.5                           # well formed, no key information at all
    assert score(traj(), reference=None) == 1.0                        # no reference: structure alone
    assert score("Yes.") == 0.0                                        # structure still gates everything
    assert build_reward("format", {"key_info": 0.0})(item(traj(loc=other_region)))["overall"] == 1.0
    with pytest.raises(ValueError, match="key_info"):
        build_reward("format", {"key_info": 2.0})


def test_the_rl_row_carries_the_reference_to_the_format_reward(tmp_path, demo_samples):
    """From the verl parquet to verl's reward function: the composite's format term sees the reference."""
    import pyarrow.parquet as pq
    from omegaconf import OmegaConf

    from medsage.data_pipeline.writers import write_verl_parquet
    from medsage.plugins.engines.verl_reward import compute_score
    from medsage.recipes import compose

    sample = next(s for s in demo_samples if s.trajectory is not None and s.kept)
    row = pq.read_table(write_verl_parquet([sample], tmp_path / "rl.parquet")).to_pylist()[0]
    reward = compose("rl", ["train_files=x"]).reward
    params = OmegaConf.to_container(reward.params, resolve=True)
    assert params["components"]["format"] == {"key_info": 0.5}
    assert compose("rl", ["reward=format"]).reward.params.key_info == 0.5  # the one weight, reward/composite.yaml's
    t = sample.trajectory
    same = render(t.loc, t.vis, t.know, t.con, t.answer)
    wrong = render('{"box_2d": [1, 1, 50, 50], "label": "zebra"}', "Zebra stripes.", "Zebras graze.", "Zebra, so.",
                   t.answer)
    score = lambda text: compute_score("d", text, row["reward_model"]["ground_truth"], row["extra_info"],  # noqa: E731
                                       reward=reward.name, reward_params=params)
    assert score(same)["format"] == 1.0 and score(wrong)["format"] == 0.5


def test_format_judges_the_revised_trajectory():
    retry = traj("no") + "user\nplease check\nassistant\n" + render_check("The region was misread.") + traj("yes")
    assert build_reward("format")(item(retry))["overall"] == 1.0
    broken = traj("no") + render_check("c") + "<LOC>" + BOX + "</LOC>"
    assert build_reward("format")(item(broken))["overall"] == 0.0


@pytest.mark.parametrize("text, gt, qtype, options, expected", [
    (traj("Yes"), "yes", "closed", None, 1.0),
    (traj("No"), "yes", "closed", None, 0.0),
    (traj("not normal"), "no", "closed", None, 0.0),               # "not"/"normal" are not "no"
    (traj("B"), "B", "choice", {"A": "Lung", "B": "Liver"}, 1.0),
    (traj("Liver"), "B", "choice", {"A": "Lung", "B": "Liver"}, 1.0),
    (traj("A or B"), "B", "choice", {"A": "Lung", "B": "Liver"}, 0.0),  # names several options
    (traj("computed tomography"), "Computed Tomography", "open", None, 1.0),
    ("<LOC>garbage", "yes", "closed", None, 0.0),                  # malformed: nothing to read
])
def test_accuracy(text, gt, qtype, options, expected):
    assert build_reward("accuracy")(item(text, gt, qtype, options))["overall"] == expected


def test_self_check_reward_is_eq10():
    sc = build_reward("self_check")
    wrong_then_right = traj("no") + render_check("Re-read the region.") + traj("yes")
    right_then_right = traj("yes") + render_check("Fine.") + traj("yes")
    wrong_then_wrong = traj("no") + render_check("Hmm.") + traj("no")
    assert sc(item(wrong_then_right))["overall"] == 1.0
    assert sc(item(right_then_right))["overall"] == 0.0
    assert sc(item(wrong_then_wrong))["overall"] == 0.0
    assert sc(item(traj("yes")))["overall"] == 0.0  # no retry, no self-check reward


def test_self_check_reward_judges_with_the_accuracy_rule():
    """r_sc is paid when the run's accuracy rule calls a1 wrong and a2 right, not by a rule of its own."""
    semantic_only = "nodule in the left lung"  # the reference says "left lung nodule"
    response = traj("liver") + render_check("Re-read the region.") + traj(semantic_only)
    it = item(response, gt="left lung nodule", qtype="open")
    assert build_reward("self_check")(it)["overall"] == 1.0
    assert build_reward("self_check", {"open_match": "exact"})(it)["overall"] == 0.0
    assert build_reward("accuracy", {"open_match": "exact"})(it)["overall"] == 0.0  # the same verdict on a2
    # a composite's self_check component judges with its accuracy component's rule
    comp = CompositeReward(weights={"accuracy": 1.0, "self_check": 1.0}, components={"accuracy": {"open_match": "exact"}})
    assert comp(it) == {"overall": 0.0, "accuracy": 0.0, "self_check": 0.0}


def test_rule_scorer_checks():
    good = RuleScorer().checks(parse_lenient(traj()))
    assert all(good.values())
    contradicted = RuleScorer().checks(parse_lenient(traj(con="No lesion is seen, so no.")))
    assert contradicted["supported"] is False
    ungrounded = RuleScorer().checks(parse_lenient(traj(vis="Normal parenchyma.")))
    assert ungrounded["grounded"] is False
    assert build_reward("consistency")(item(traj()))["overall"] == 1.0
    assert build_reward("consistency")(item(traj(con="No lesion, so no.")))["overall"] == 0.75


def test_consistency_loads_a_scorer_by_path(tmp_path, monkeypatch):
    (tmp_path / "lab_scorer.py").write_text(
        "class HalfScorer:\n    def __init__(self, value=0.5):\n        self.value = value\n"
        "    def score(self, trajectory, item):\n        return self.value\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reward = build_reward("consistency", {"scorer": "lab_scorer:HalfScorer", "scorer_kwargs": {"value": 0.25}})
    assert reward(item(traj()))["overall"] == 0.25
    bad = build_reward("consistency", {"scorer": "lab_scorer:HalfScorer", "scorer_kwargs": {"value": 3.0}})
    with pytest.raises(ValueError, match="outside"):
        bad(item(traj()))


def test_plain_reward_refuses_parameters():
    REWARDS.register("plain_test")(lambda it: 1.0)
    try:
        with pytest.raises(TypeError, match="takes no parameters"):
            build_reward("plain_test", {"weight": 2})
    finally:
        REWARDS.unregister("plain_test")


def _share(composite, items, name):
    """Component ``name``'s share of the batch's total |reward| (each term w_i · r_ij / s_i)."""
    outs = composite.score_batch(items)
    scales = {k: sum(abs(o[k]) for o in outs) / len(outs) for k in composite.weights}
    totals = {k: sum(w * abs(o[k]) / scales[k] for o in outs) for k, w in composite.weights.items()}
    return totals[name] / sum(totals.values())


class _Scaled:
    """A component whose raw scale is chosen by the test (a stand-in scorer returning 0-scale)."""

    def __init__(self, scale):
        self.scale = scale

    def __call__(self, it):
        return self.scale * (1.0 if "yes" in it.response else 0.5)


@pytest.mark.parametrize("raw_scale", [1.0, 10.0, 0.01])
def test_composite_share_stays_at_weight_when_scale_changes(raw_scale):
    REWARDS.register("scaled_test")(lambda it, s=raw_scale: _Scaled(s)(it))
    try:
        comp = CompositeReward(weights={"accuracy": 1.0, "scaled_test": 3.0})
        items = [item(traj("yes" if i % 3 else "no")) for i in range(12)]
        assert _share(comp, items, "scaled_test") == pytest.approx(3.0 / 4.0, rel=1e-6)
        normalised = [o["overall"] for o in comp.score_batch(items)]  # accuracy: 8 of 12 right
        plain = CompositeReward(weights={"accuracy": 1.0, "scaled_test": 3.0}, normalize=False)
        plain_out = plain.score_batch(items)
        raw_total = sum(o["overall"] for o in plain_out)
        raw_scaled = sum(3.0 * o["scaled_test"] for o in plain_out)
        if raw_scale != 1.0:  # without normalisation the share follows the raw scale instead
            assert raw_scaled / raw_total != pytest.approx(0.75, rel=1e-2)
        # dividing by the batch scale makes the normalised reward independent of the raw scale
        # (every trajectory's conclusion says "yes", so scaled_test is s for all: its term is 3 throughout)
        assert normalised == pytest.approx([(1.0 / (8 / 12) if i % 3 else 0.0) + 3.0 for i in range(12)])
    finally:
        REWARDS.unregister("scaled_test")


def test_composite_one_rollout_is_its_plain_weighted_sum():
    comp = CompositeReward(weights={"accuracy": 1.0, "format": 0.5})
    assert comp(item(traj("yes"))) == {"overall": 1.5, "accuracy": 1.0, "format": 1.0}
    assert comp(item(traj("no"))) == comp(item(traj("no")))  # no running state between calls


def test_composite_rejects_bad_weights():
    with pytest.raises(ValueError):
        CompositeReward(weights={"accuracy": -1.0})
    with pytest.raises(ValueError, match="itself"):
        CompositeReward(weights={"composite": 1.0})


def test_reward_input_from_rl_row():
    it = reward_input_from_row("x", "B", {"question_type": "choice", "options": {"A": "Lung", "B": "Liver", "C": None},
                                          "id": "s1"})
    assert it.options == {"A": "Lung", "B": "Liver"} and it.question_type == "choice"
    # A row without a type is typed as evaluation types it (medsage.vocab.type_of_answer).
    assert reward_input_from_row("x", "Yes", None).question_type == "closed"
    assert reward_input_from_row("x", "not present", None).question_type == "open"
