"""bench/bench_learning.py's statistics: the paired gain and the plain verdicts it prints under its table."""

from __future__ import annotations

import pytest

np = pytest.importorskip("numpy")


def runs_of(bench, group, right_by_seed, n=60):
    """One run per seed with the first ``right`` of ``n`` quadrant items correct (and one count item, always right)."""
    out = []
    for seed, right in right_by_seed.items():
        correct = {f"q{i}": i < right for i in range(n)} | {"c0": True}
        kind = {f"q{i}": "quadrant" for i in range(n)} | {"c0": "count"}
        out.append(bench.Run(group=group, table="table5", seed=seed, alpha=None, correct=correct, kind=kind))
    return out


def test_the_bar_is_met_only_with_the_gain_apart_intervals_and_three_seeds(bench):
    sft = runs_of(bench, "SFT", {0: 28, 1: 28, 2: 28})
    rl = runs_of(bench, "SFT + RL", {0: 52, 1: 54, 2: 51})
    rows = bench.summarise(sft + rl, "quadrant")
    gain = next(r for r in rows if r["group"] == "SFT + RL")["target_gain"]
    assert gain[0] == pytest.approx(100 * (52 + 54 + 51 - 3 * 28) / 180) and gain[1] > 0
    said = bench.verdicts(rows, sft + rl, "quadrant")
    assert "do not overlap" in said[0] and "is met" in said[0]
    assert "R-GRPO" in said[1] and "not measured" in said[1]

    two = [r for r in sft + rl if r.seed < 2]  # the same gain on two seeds falls short of the bar
    said = bench.verdicts(bench.summarise(two, "quadrant"), two, "quadrant")
    assert "NOT met" in said[0]

    small = sft + runs_of(bench, "SFT + RL", {0: 31, 1: 30, 2: 32})  # +5 points: the intervals overlap
    said = bench.verdicts(bench.summarise(small, "quadrant"), small, "quadrant")
    assert "do not overlap" not in said[0] and "intervals overlap" in said[0] and "NOT met" in said[0]


def test_r_grpo_against_grpo_is_said_plainly_either_way(bench):
    sft = runs_of(bench, "SFT", {0: 28, 1: 28, 2: 28})
    rl = runs_of(bench, "SFT + RL", {0: 50, 1: 50, 2: 50})
    for self_right, word in ((58, "beats"), (50, "does not separate from"), (30, "is worse than")):
        runs = sft + rl + runs_of(bench, "SFT + RL + Self", {0: self_right, 1: self_right, 2: self_right})
        said = bench.verdicts(bench.summarise(runs, "quadrant"), runs, "quadrant")
        assert said[1].startswith(f"SFT + RL + Self (R-GRPO) {word} SFT + RL (GRPO) on quadrant"), said


def test_each_alpha_is_compared_with_alpha_zero(bench):
    def alpha_runs(alpha, right):
        runs = runs_of(bench, f"α = {alpha:g}", {0: right, 1: right, 2: right})
        for r in runs:
            r.table, r.alpha = "table4", alpha
        return runs

    runs = alpha_runs(0, 40) + alpha_runs(0.1, 40) + alpha_runs(0.2, 55)
    said = bench.verdicts(bench.summarise(runs, "quadrant"), runs, "quadrant")
    assert said[-2].startswith("α = 0.1 does not separate from α = 0 on quadrant: +0.0"), said
    assert said[-1].startswith("α = 0.2 beats α = 0 on quadrant: +25.0"), said
    without_zero = [r for r in runs if r.alpha != 0]  # nothing to compare against: no sentence about α
    said = bench.verdicts(bench.summarise(without_zero, "quadrant"), without_zero, "quadrant")
    assert not any(line.startswith("α") for line in said)


def test_an_rl_row_is_paired_with_the_sft_it_started_from(bench, tmp_path):
    """Two SFT models for one seed (one re-trained under another store key): the gain is over the one RL moved from."""
    first, second = runs_of(bench, "SFT", {0: 20}) + runs_of(bench, "SFT", {0: 40})
    first.model, second.model = "store/sft-a/run_001", "store/sft-b/run_001"
    (rl,) = runs_of(bench, "SFT + RL", {0: 50})
    rl.rl_dir, rl.start = tmp_path, "store/sft-b/run_001"
    rows = bench.summarise([first, second, rl], "quadrant")
    assert next(r for r in rows if r["group"] == "SFT")["target"][0] == pytest.approx(100 * 20 / 60)  # the row: first
    gain = next(r for r in rows if r["group"] == "SFT + RL")["target_gain"]
    assert gain[0] == pytest.approx(100 * (50 - 40) / 60)
