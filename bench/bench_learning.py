"""Does RL improve the model? Table 5 and Figure 5 in miniature, over seeds, with 95 % intervals.

    python bench/bench_learning.py [--keep DIR] [--seeds 0,1,2] [--rows sft,sft_rl,sft_rl_self]
                                   [--alphas 0,0.1,0.2,0.3] [--experiment miniature_rl] [--report-only] [overrides...]

1. per seed, `medsage pipeline +experiment=<experiment> -m +table5_row=<rows> train_seed=<seed>`: one SFT per seed,
   shared by its rows, then GRPO (SFT + RL) and R-GRPO (SFT + RL + Self), each evaluated on the held-out slices;
2. per seed, `medsage pipeline +experiment=<experiment> -m alpha=<alphas> table=table4 train_seed=<seed>` (the
   R-GRPO run at the recipe's α is the SFT + RL + Self row's: the stage store shares it);
3. reads every evaluation in DIR's stage store, item by item, and reports per row and per α: accuracy on the
   experiment's target kind (its ``target_kind``) and overall, each the mean over seeds with a 95 % bootstrap
   interval (items and seeds resampled together), the gain over SFT with a paired interval (same seeds, same items),
   the RL training's accuracy (first answers of its rollouts) over its first and last 10 steps, and its self-check and correction rates (per step,
   averaged over steps and seeds). Writes DIR/bench_learning.md with two PNGs beside it: the training accuracy per
   step (from the RL run's metrics.jsonl, every RL run) and Figure 5 in miniature (accuracy and self-check rate
   against α).

Every stage's output lives in DIR/store under a hash of its inputs, so an interrupted bench, or one rerun with more
seeds, redoes only what is missing; --report-only reads what is there and runs nothing. Cost on 2 CPU cores: an RL run of
100 steps ~10 min (R-GRPO more: it retries), SFT ~4 min, an evaluation ~35 s; the defaults are ~2.5 hours. The target:
SFT + RL beats SFT on the target kind by >= 10 points with non-overlapping intervals over 3 seeds. Under the table the
report says in plain words whether that bar is met and whether R-GRPO beats GRPO (or that it was not measured).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from medsage.eval import layout as eval_layout
from medsage.eval.report.miniature import CHANCE, KIND_COLUMNS
from medsage.launch import layout
from medsage.launch.rl_metrics import METRICS, read_steps

BENCHMARK = "records"          # the miniature's evaluation benchmark (eval/benchmarks=records)
# A step's training accuracy: its rollouts' first answers (τ1) right, logged by medsage through verl's metrics for
# GRPO and R-GRPO alike. Not verl's critic/score/mean: the composite reward is normalised within each batch (B.1),
# so its batch mean is 1 whenever any rollout scores and says nothing about how many do.
FIRST_TRY_ERROR = "medsage/first_try_error_rate"
RATES = {"self-check": "medsage/self_check_rate", "correction": "medsage/correction_rate"}
ENDS = 10                      # steps averaged at each end of a training curve
REPS = 4000                    # bootstrap resamples
ROW_ORDER = ["SFT", "SFT + RL", "SFT + RL + Self"]
DEFAULT_LABEL = "miniature"    # the experiments' run label; a run under another label is its own group


def pipeline(work: Path, experiment: str, *overrides: str) -> float:
    cmd = [sys.executable, "-m", "medsage.launch.cli", "pipeline", f"+experiment={experiment}", f"run_root={work}",
           *overrides]
    print("$", " ".join(cmd[2:]), flush=True)
    t = time.perf_counter()
    if subprocess.run(cmd, check=False).returncode:
        sys.exit(f"failed: {' '.join(cmd)}")
    return time.perf_counter() - t


@dataclass
class Run:
    """One evaluation in the store: its group (a Table 5 row or an α), seed, per-item verdicts, RL metrics."""

    group: str
    table: str
    seed: int
    alpha: float | None
    correct: dict[str, bool]            # item id -> correct
    kind: dict[str, str]                # item id -> question kind
    steps: dict[int, dict] = field(default_factory=dict)   # the RL training's metrics per step (none for SFT)
    rl_dir: Path | None = None          # the RL stage's folder (one RL run can be evaluated under two tables)
    second: dict = field(default_factory=dict)  # the answer-key retry's self_correction block (eval.retry), if run
    model: str = ""                     # the evaluated model's folder
    start: str | None = None            # an RL run's starting model (its SFT), whose evaluation is its SFT baseline


def load_runs(work: Path) -> list[Run]:
    runs = []
    # eval-*: a row's own evaluation; eval_sft-*: the SFT model an RL row started from, evaluated beside it
    for run_json in sorted([*work.glob(f"store/eval-*/{eval_layout.RUN}"), *work.glob(f"store/eval_sft-*/{eval_layout.RUN}")]):
        data = json.loads(run_json.read_text())
        tags = data.get("tags") or {}
        verdicts = eval_layout.beside(eval_layout.predictions_file(run_json.parent, BENCHMARK), "verdicts.jsonl")
        if tags.get("task") != "miniature" or "seed" not in tags or not verdicts.is_file():
            continue
        items = [json.loads(line) for line in verdicts.read_text().splitlines() if line.strip()]
        model = Path(data.get("model_path", ""))
        rl_dir = model.parent if model.name == layout.RL_FINAL_MODEL else None
        steps = read_steps(rl_dir / METRICS) if rl_dir else {}
        start = None
        if rl_dir and (rl_dir / layout.RL_CONFIG).is_file():
            start = str(OmegaConf.load(rl_dir / layout.RL_CONFIG).model.path)
        table = str(tags.get("table"))
        alpha = float(tags["alpha"]) if tags.get("alpha") is not None else None
        group = f"α = {alpha:g}" if table == "table4" else str(tags.get("row"))
        if data.get("label") not in (None, DEFAULT_LABEL):  # a variant run under its own label (e.g. label=lr2e-5)
            group = f"{group} [{data['label']}]"
        second = ((data.get("summaries") or {}).get(BENCHMARK) or {}).get("self_correction") or {}
        runs.append(Run(group, table, int(tags["seed"]), alpha, {v["id"]: bool(v["correct"]) for v in items},
                        {v["id"]: v.get("question_kind") for v in items}, steps, rl_dir, second, str(model), start))
    return runs


def _matrix(runs: list[Run], kind: str | None, seeds: list[int], items: list[str] | None = None) -> np.ndarray:
    """seeds x items of 0/1, the items of ``kind`` (all when None) that every run has, in one order."""
    by_seed = {r.seed: r for r in runs}
    if items is None:
        common = set.intersection(*(set(by_seed[s].correct) for s in seeds))
        items = sorted(i for i in common if kind is None or by_seed[seeds[0]].kind[i] == kind)
    return np.array([[by_seed[s].correct[i] for i in items] for s in seeds], dtype=float)


def bootstrap(m: np.ndarray, rng: np.random.Generator) -> tuple[float, float, float]:
    """Mean (%) of a seeds x items matrix and its 95 % percentile interval, seeds and items resampled together."""
    s, n = m.shape
    rs = rng.integers(0, s, size=(REPS, s))
    ri = rng.integers(0, n, size=(REPS, n))
    means = np.array([m[rs[b]][:, ri[b]].mean() for b in range(REPS)])
    lo, hi = np.percentile(means, [2.5, 97.5])
    return 100 * m.mean(), 100 * lo, 100 * hi


def _fmt(mean_lo_hi) -> str:
    if mean_lo_hi is None:
        return "-"
    mean, lo, hi = mean_lo_hi
    return f"{mean:.1f} [{lo:.1f}, {hi:.1f}]"


def _signed(mean_lo_hi) -> str:
    if mean_lo_hi is None:
        return "-"
    mean, lo, hi = mean_lo_hi
    return f"{mean:+.1f} [{lo:+.1f}, {hi:+.1f}]"


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def _score(row: dict) -> str:
    """SCoRe's numbers of a row (means over seeds), or '-' where its evaluations ran no retry."""
    if row.get("acc_t1") is None:
        return "-"
    return f"{row['acc_t1']:.1f} → {row['acc_t2']:.1f} ({row['delta_i_to_c']:.1f}, {row['delta_c_to_i']:.1f})"


def _curve(r: Run) -> list[float]:
    """Training accuracy of the first answer per step (0-1)."""
    return [1 - r.steps[k][FIRST_TRY_ERROR] for k in sorted(r.steps) if FIRST_TRY_ERROR in r.steps[k]]


def _rate(runs: list[Run], key: str) -> float | None:
    """A training rate (%) per step, averaged over every step of every seed's run."""
    vals = [100 * s[key] for r in runs for s in r.steps.values() if key in s]
    return float(np.mean(vals)) if vals else None


def paired_gain(runs: list[Run], base: list[Run], kind: str | None, rng: np.random.Generator):
    """(gain in points with its 95 % interval, the seeds used) of ``runs`` over ``base``: per seed both have, item by
    item on the items both have; None when they share no seed."""
    by_seed = {r.seed: r for r in base}
    ours = [r for r in runs if r.seed in by_seed]
    if not ours:
        return None, []
    paired = [r.seed for r in ours]
    theirs = [by_seed[s] for s in paired]
    items = sorted(set.intersection(*(set(r.correct) for r in (*ours, *theirs))))
    items = [i for i in items if kind is None or ours[0].kind[i] == kind]
    diff = _matrix(ours, kind, paired, items) - _matrix(theirs, kind, paired, items)
    return bootstrap(diff, rng), paired


def groups_of(runs: list[Run]) -> dict[str, list[Run]]:
    """Runs by group, one per seed (the same model evaluated twice, e.g. the SFT row and the SFT beside an RL row:
    the first counts), each group in seed order."""
    groups: dict[str, list[Run]] = defaultdict(list)
    for r in runs:
        if not any(g.seed == r.seed for g in groups[r.group]):
            groups[r.group].append(r)
    return {g: sorted(rs, key=lambda r: r.seed) for g, rs in groups.items()}


def sft_baselines(rs: list[Run], sft_by_model: dict[str, Run], sft: list[Run]) -> list[Run]:
    """Per seed of ``rs``, the SFT evaluation to pair with: that of the model its RL run started from when the store
    has it (an SFT re-trained under another key is not the model RL moved from), else the seed's SFT row."""
    by_seed = {r.seed: r for r in sft}
    out = []
    for r in rs:
        base = (sft_by_model.get(r.start) if r.start else None) or by_seed.get(r.seed)
        if base is not None:
            out.append(base)
    return out


def summarise(runs: list[Run], target: str, seed: int = 0) -> list[dict]:
    """One row per group: n seeds, target-kind and overall accuracy with intervals, the gain over SFT (paired over
    the seeds both have, against the SFT each RL run started from), the training accuracy at both ends and the
    training rates."""
    rng = np.random.default_rng(seed)
    groups = groups_of(runs)
    sft = groups.get("SFT", [])
    sft_by_model = {r.model: r for r in runs if r.group.startswith("SFT") and not r.rl_dir}
    order = lambda g: (ROW_ORDER.index(g) if g in ROW_ORDER else len(ROW_ORDER), g)
    out = []
    for g in sorted(groups, key=order):
        rs = groups[g]
        seeds = [r.seed for r in rs]
        row = {"group": g, "seeds": seeds, "alpha": rs[0].alpha, "table": rs[0].table}
        for name, kind in (("target", target), ("overall", None)):
            m = _matrix(rs, kind, seeds)
            row[name] = bootstrap(m, rng) if m.size else None
            gain, paired = paired_gain(rs, sft_baselines(rs, sft_by_model, sft), kind, rng) if g != "SFT" else (None, [])
            if gain is not None:
                row[f"{name}_gain"] = gain
                row["paired_seeds"] = paired
        curves = [c for c in (_curve(r) for r in rs) if c]
        if curves:
            row["acc_first"] = float(np.mean([np.mean(c[:ENDS]) for c in curves]))
            row["acc_last"] = float(np.mean([np.mean(c[-ENDS:]) for c in curves]))
            row["steps"] = [len(c) for c in curves]
        for label, key in RATES.items():
            row[label] = _rate(rs, key)
        for key in ("acc_t1", "acc_t2", "delta_i_to_c", "delta_c_to_i"):  # SCoRe's, the evaluation's answer-key retry
            vals = [r.second[key] for r in rs if r.second.get(key) is not None]
            row[key] = float(np.mean(vals)) if vals else None
        out.append(row)
    return out


TARGET_GAIN, TARGET_SEEDS = 10.0, 3  # the bar RL is held to: >= 10 points over SFT, non-overlapping intervals, 3 seeds


def verdicts(rows: list[dict], runs: list[Run], target: str, seed: int = 0) -> list[str]:
    """Plain sentences: does SFT + RL beat SFT on the target kind by the bar, does R-GRPO beat GRPO, and does each
    α of the sweep beat α = 0 on the target kind."""
    name = KIND_COLUMNS.get(target, target)
    by = {r["group"]: r for r in rows}
    out = []
    sft, rl = by.get("SFT"), by.get("SFT + RL")
    if not (sft and rl and rl.get("target_gain")):
        out.append(f"SFT + RL against SFT on {name}: not measured (no seed has both rows).")
    else:
        gain, (_, s_lo, s_hi), (_, r_lo, r_hi) = rl["target_gain"], sft["target"], rl["target"]
        apart = r_lo > s_hi or r_hi < s_lo
        met = gain[0] >= TARGET_GAIN and r_lo > s_hi and len(rl["paired_seeds"]) >= TARGET_SEEDS
        out.append(f"SFT + RL against SFT on {name}: {_signed(gain)} points over seeds "
                   f"{','.join(map(str, rl['paired_seeds']))}; the two rows' intervals "
                   f"{'do not overlap' if apart else 'overlap'}. The bar (>= {TARGET_GAIN:g} points, intervals apart, "
                   f">= {TARGET_SEEDS} seeds) is {'met' if met else 'NOT met'}.")
    groups = groups_of(runs)
    rng = np.random.default_rng(seed)
    if "SFT + RL + Self" not in groups or "SFT + RL" not in groups:
        out.append("SFT + RL + Self (R-GRPO) against SFT + RL (GRPO): not measured (no seed has both rows).")
    else:
        for kname, kind in ((name, target), ("overall", None)):
            out.append(_compared("SFT + RL + Self (R-GRPO)", groups["SFT + RL + Self"], "SFT + RL (GRPO)",
                                 groups["SFT + RL"], kname, kind, rng))
    # Figure 5: each α against α = 0 (the retry without credit for the check tokens), paired over seeds and items
    alphas = sorted((r for r in rows if r["table"] == "table4" and r["alpha"] is not None), key=lambda r: r["alpha"])
    if alphas and alphas[0]["alpha"] == 0:
        base = alphas[0]["group"]
        for row in alphas[1:]:
            out.append(_compared(row["group"], groups[row["group"]], base, groups[base], name, target, rng))
    return out


def _compared(name: str, runs: list[Run], base_name: str, base: list[Run], kname: str, kind: str | None,
              rng: np.random.Generator) -> str:
    """One plain sentence: ``runs`` beat, are worse than, or do not separate from ``base`` on one kind (paired)."""
    gain, paired = paired_gain(runs, base, kind, rng)
    if gain is None:
        return f"{name} against {base_name} on {kname}: not measured (no seed has both rows)."
    word = "beats" if gain[1] > 0 else "is worse than" if gain[2] < 0 else "does not separate from"
    return f"{name} {word} {base_name} on {kname}: {_signed(gain)} points over seeds {','.join(map(str, paired))}."


def markdown(rows: list[dict], target: str, work: Path) -> str:
    name = KIND_COLUMNS.get(target, target)
    head = (f"| run | seeds | {name} % (chance {CHANCE.get(target, float('nan')):g}) | gain over SFT | overall % "
            "| gain over SFT | training accuracy, first → last 10 steps | self-check % per step | correction % per step "
            "| Acc@t1 → Acc@t2 (Δi→c, Δc→i) |")
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        trained = (f"{r['acc_first']:.2f} → {r['acc_last']:.2f} ({'/'.join(map(str, r['steps']))} steps)"
               if "acc_first" in r else "-")
        lines.append(f"| {r['group']} | {','.join(map(str, r['seeds']))} | {_fmt(r['target'])} | "
                     f"{_signed(r.get('target_gain'))} | {_fmt(r['overall'])} | {_signed(r.get('overall_gain'))} | "
                     f"{trained} | {_num(r.get('self-check'))} | {_num(r.get('correction'))} | {_score(r)} |")
    return ("Miniature, a synthetic lesion task (not the paper's benchmarks): mean over seeds [95 % bootstrap interval,"
            " items and seeds resampled together]; gains are paired (same seeds, same items). Rates: the RL training's."
            " Acc@t1 → Acc@t2: the evaluation's second attempt with the answer-key trigger, as in training"
            " (eval.retry=answer_key; an oracle, so not a deployable score), means over seeds; '-' where the"
            f" evaluation had no trigger. Store: {work / 'store'}\n\n" + "\n".join(lines) + "\n")


def plot_training(runs: list[Run], path: Path) -> Path | None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seen: dict[Path, Run] = {}  # one curve per RL run: Table 5's R-GRPO row is the α sweep's run at its α
    for r in sorted(runs, key=lambda r: (r.table != "table5", r.group, r.seed)):
        if r.rl_dir and _curve(r):
            seen.setdefault(r.rl_dir, r)
    if not seen:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    colours: dict[str, str] = {}
    for r in seen.values():
        c = np.array(_curve(r))
        first = r.group not in colours
        colour = colours.setdefault(r.group, f"C{len(colours)}")
        ax.plot(np.arange(1, len(c) + 1), c, color=colour, alpha=0.25, lw=0.8)
        k = min(ENDS, len(c))
        smooth = np.convolve(c, np.ones(k) / k, mode="valid")
        ax.plot(np.arange(k, len(c) + 1), smooth, color=colour, lw=2, label=r.group if first else None)
    ax.set_xlabel("RL step (2 prompts x 4 rollouts)")
    ax.set_ylabel("training accuracy, first answer (1 - first_try_error_rate)")
    ax.set_title(f"Miniature (synthetic lesion task): training accuracy per step\n(faint: each step; bold: {ENDS}-step mean;"
                 " one line per seed)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_alpha(rows: list[dict], target: str, path: Path) -> Path | None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = sorted((r for r in rows if r["table"] == "table4" and r["alpha"] is not None), key=lambda r: r["alpha"])
    if not pts:
        return None
    x = [r["alpha"] for r in pts]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (("target", KIND_COLUMNS.get(target, target)), ("overall", "overall")):
        mean = np.array([r[key][0] for r in pts])
        err = np.array([[r[key][0] - r[key][1] for r in pts], [r[key][2] - r[key][0] for r in pts]])
        ax.errorbar(x, mean, yerr=err, marker="o", capsize=3, label=f"accuracy, {label} (95 % interval)")
    ax.set_xlabel("α (self-check bonus)")
    ax.set_ylabel("held-out accuracy %")
    rate = ax.twinx()
    rate.plot(x, [r["self-check"] or 0 for r in pts], "k--s", label="self-check rate % (RL training)")
    rate.set_ylabel("self-check rate %")
    rate.set_ylim(0, 100)
    ax.legend(loc="lower left", fontsize=7)
    rate.legend(loc="lower right", fontsize=7)
    ax.set_title("Figure 5 in miniature (synthetic lesion task)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def stage_times(work: Path) -> dict[str, list[float]]:
    """Seconds of every finished stage in the store, by stage name."""
    times: dict[str, list[float]] = defaultdict(list)
    for stage_json in work.glob(f"store/*/{layout.STAGE}"):
        s = json.loads(stage_json.read_text())
        if s.get("ended") and s.get("started"):
            times[s["stage"]].append(s["ended"] - s["started"])
    return times


def target_kind(experiment: str) -> str:
    """The experiment recipe's ``target_kind``: the one place it is set."""
    from medsage.recipes import compose

    return str(compose("pipeline", [f"+experiment={experiment}"]).target_kind)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", default=str(Path(__file__).resolve().parent / "out" / "learning"),
                        help="work in this folder and keep it: its stage store makes a rerun resume (default: %(default)s)")
    parser.add_argument("--experiment", default="miniature_rl", help="recipes/experiment/<name>.yaml")
    parser.add_argument("--seeds", default="0,1,2", help="train_seed values (SFT and RL data order)")
    parser.add_argument("--rows", default="sft,sft_rl,sft_rl_self", help="recipes/table5_row options ('' to skip)")
    parser.add_argument("--alphas", default="0,0.1,0.2,0.3", help="α values of the sweep ('' to skip it)")
    parser.add_argument("--report-only", action="store_true", help="run nothing: report what the store holds")
    parser.add_argument("overrides", nargs="*", help="more pipeline overrides, e.g. rl_steps=200 sft_epochs=2")
    args = parser.parse_args()
    work = Path(args.keep).resolve()
    wall: dict[str, float] = {}
    if not args.report_only:
        for seed in args.seeds.split(","):
            if args.rows:
                wall[f"rows, seed {seed}"] = pipeline(work, args.experiment, "-m", f"+table5_row={args.rows}",
                                                      "table=table5", f"train_seed={seed}", *args.overrides)
            if args.alphas:
                wall[f"α sweep, seed {seed}"] = pipeline(work, args.experiment, "-m", f"alpha={args.alphas}",
                                                         "table=table4", f"train_seed={seed}", *args.overrides)

    target = target_kind(args.experiment)
    runs = load_runs(work)
    if not runs:
        sys.exit(f"no evaluated miniature run with a seed tag in {work / 'store'}")
    rows = summarise(runs, target)
    text = markdown(rows, target, work)
    text += "\n" + "\n".join(f"- {v}" for v in verdicts(rows, runs, target)) + "\n"
    pngs = [p for p in (plot_training(runs, work / "training_curve.png"),
                        plot_alpha(rows, target, work / "figure5_alpha.png")) if p]
    text += "".join(f"\n![{p.stem}]({p.name})\n" for p in pngs)
    text += "\nseconds per stage run (min-max, runs): " + ", ".join(
        f"{k} {min(v):.0f}-{max(v):.0f} ({len(v)})" for k, v in sorted(stage_times(work).items(), key=lambda kv: -max(kv[1])))
    (work / "bench_learning.md").write_text(text + "\n")
    print(text)
    if wall:
        print("wall: " + ", ".join(f"{k} {v:.0f} s" for k, v in wall.items()))
    print(f"written: {work / 'bench_learning.md'}" + "".join(f", {p}" for p in pngs))


if __name__ == "__main__":
    main()
