"""``medsage report``: the paper's tables with its published numbers as reference rows, your runs
beside them and the deltas; Tables 3-5 and Figure 5 (α plot) from experiment runs. Markdown, CSV, PNG.

Runs are the ``run.json`` files ``medsage eval run`` writes (searched under the folders given).
A run joins a table through its tags (``eval.tags`` in the recipe):
- every run with Table 1 benchmarks is a Table 1 row (label = ``eval.label``);
- ``{table: table3, row: "RPA-sft"}`` / ``{table: table5, row: "SFT + RL"}``: the paper row it reproduces;
- ``{table: table4, alpha: 0.2}``: a Table 4 row and a point of the α plot (its self-check rate from the
  RL training metrics named by ``train_metrics``);
- a ``judge.json`` beside a run (``medsage eval judge``) gives its Table 2 GPT-scores;
- ``{task: miniature, ...}``: the synthetic lesion task's own tables, never the paper's (``miniature.py``).
Scores are the summaries' headline accuracy (named in the report), never recomputed differently.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from medsage.eval import layout
from medsage.eval.scoring import HEADLINE
from medsage.io import atomic_write_bytes, atomic_write_text

PAPER_FILE = Path(__file__).with_name("paper_numbers.yaml")


def paper_numbers() -> dict:
    import yaml

    return yaml.safe_load(PAPER_FILE.read_text(encoding="utf-8"))


def find_runs(folders: list[Path]) -> list[dict]:
    runs = []
    for folder in folders:
        for path in sorted(Path(folder).rglob(layout.RUN)):
            run = json.loads(path.read_text(encoding="utf-8"))
            run["dir"] = str(path.parent)
            judge = path.parent / layout.JUDGE
            run["judge"] = json.loads(judge.read_text(encoding="utf-8")) if judge.exists() else None
            runs.append(run)
    return runs


def _delta(a, b):
    return None if a is None or b is None else round(a - b, 1)


def _mean(vals):
    """The mean only when every column is there: a partial average is not comparable with the paper's."""
    if not vals or any(v is None for v in vals):
        return None
    return round(sum(vals) / len(vals), 1)


def _label(run: dict, vals: list) -> str:
    have = sum(v is not None for v in vals)
    return run["label"] if have == len(vals) else f"{run['label']} (partial: {have}/{len(vals)} benchmarks)"


def _acc(run: dict, bench: str):
    return (run.get("summaries", {}).get(bench) or {}).get("accuracy")


class Table:
    """Rows of (section, name, values) with a header; renders Markdown and CSV the same way."""

    def __init__(self, title: str, columns: list[str], digits: int | list[int] = 1):
        # digits: one for every column, or one per column (an IoU beside percentages)
        self.title, self.columns, self.rows = title, columns, []
        self.digits = digits if isinstance(digits, list) else [digits] * len(columns)

    def add(self, section: str, name: str, values: list):
        self.rows.append((section, name, values))

    def markdown(self, notes: list[str] = ()) -> str:
        out = [f"### {self.title}", "", "| Method | " + " | ".join(self.columns) + " |",
               "|---|" + "---:|" * len(self.columns)]
        section = None
        for sec, name, values in self.rows:
            if sec != section:
                out.append(f"| *{sec}* |" + " |" * len(self.columns))
                section = sec
            out.append(f"| {name} | " + " | ".join(_cell(v, d) for v, d in zip(values, self.digits)) + " |")
        out += [""] + [f"- {n}" for n in notes] + [""]
        return "\n".join(out)

    def csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["section", "method", *self.columns])
        for sec, name, values in self.rows:
            w.writerow([sec, name, *["" if v is None else v for v in values]])
        return buf.getvalue()


def _cell(v, digits: int = 1) -> str:
    if v is None:
        return "—"
    return v if isinstance(v, str) else f"{v:.{digits}f}"


def recomputed_average(values: list) -> float | None:
    """The mean of the five benchmark columns (None when one is missing), the only average computed here."""
    return _mean(list(values[:5]))


def table1(paper: dict, runs: list[dict]) -> Table:
    """Paper rows with the printed and the recomputed average side by side (they differ for some rows,
    MEDSAGE's own included: 69.8 printed, 68.2 recomputed); your runs get the recomputed average only,
    and Δ against MEDSAGE's recomputed average."""
    t1 = paper["table1"]
    bench_cols = list(t1["benchmarks"])
    columns = [*bench_cols, "Average (printed)", "Average (recomputed)", "Δ (%)"]
    t = Table(t1["title"] + " — paper rows as published; yours below with Δ to MEDSAGE (paper, recomputed)", columns)
    for group, rows in t1["groups"].items():
        for name, values in rows.items():
            t.add(f"Paper: {group}", name, [*values[:6], recomputed_average(values), values[6]])
    ours = t1["groups"]["Medical-specific reasoning VLMs"][t1["ours"]]
    ours_avg = recomputed_average(ours)
    for run in runs:
        vals = [_acc(run, t1["benchmarks"][c]) for c in bench_cols]
        if all(v is None for v in vals):
            continue
        avg = _mean(vals)
        t.add("Your runs", _label(run, vals), [*vals, None, avg, _delta(avg, ours_avg)])
        t.add("Your runs", f"  Δ vs {t1['ours']}",
              [_delta(v, p) for v, p in zip(vals, ours[:5])] + [None, _delta(avg, ours_avg), None])
    return t


def ablation_table(paper: dict, runs: list[dict], key: str) -> Table:
    spec = paper[key]
    cols = list(spec["benchmarks"])
    t = Table(spec["title"], spec["columns"])
    for name, values in spec["rows"].items():
        t.add("Paper", name, values)
    for run in runs:
        tags = run.get("tags") or {}
        if tags.get("table") != key:
            continue
        vals = [_acc(run, spec["benchmarks"][c]) for c in cols]
        name = _row_for(spec, tags) or run["label"]
        avg = _mean(vals)
        t.add("Your runs", f"{name} [{_label(run, vals)}]", [*vals, avg])
        if name in spec["rows"]:
            t.add("Your runs", "  Δ vs paper", [_delta(v, p) for v, p in zip([*vals, avg], spec["rows"][name])])
    return t


def _row_for(spec: dict, tags: dict) -> str | None:
    if "alpha" in tags and "alpha" in spec:
        for row, a in spec["alpha"].items():
            if abs(float(a) - float(tags["alpha"])) < 1e-9:
                return row
        return f"α = {tags['alpha']}"
    return tags.get("row")


def table2(paper: dict, runs: list[dict]) -> Table:
    spec = paper["table2"]
    t = Table(spec["title"], spec["columns"], digits=3)
    for model, by_ds in spec["rows"].items():
        for ds, values in by_ds.items():
            t.add("Paper", f"{model} / {ds}", values)
    dims = ["localization", "visual_analysis", "knowledge", "reasoning"]
    for run in runs:
        for bench, summary in (run.get("judge") or {}).items():
            d = summary["dimensions"]
            t.add("Your runs", f"{run['label']} / {bench}", [d.get(k, {}).get("mean") for k in dims] + [summary.get("average")])
    return t


SELF_CHECK_METRIC = "medsage/self_check_rate"  # logged by the RL trainer per step (plugins/self_check/advantage.py)


def training_self_check_rate(run: dict) -> float | None:
    """Figure 5's self-check rate (%): the mean over training steps of ``medsage/self_check_rate``. A first answer
    at evaluation never retries (its trigger, the answer key, is an oracle); ``eval.retry=answer_key``'s second
    attempt is reported on its own (``self_correction``), never as this rate."""
    return training_mean(run, SELF_CHECK_METRIC)


def training_mean(run: dict, metric: str) -> float | None:
    """The mean over RL training steps of a rate ``metric``, in %, from the RL run's verl metrics file
    (``eval.tags.train_metrics``: ``<rl out>/metrics.jsonl``, one ``{"step", "data": {...}}`` line per step,
    verl's file logger). None when the run has no such file or metric."""
    from medsage.launch.rl_metrics import read_steps

    path = (run.get("tags") or {}).get("train_metrics")
    if not path:
        return None
    rates = [float(data[metric]) for data in read_steps(path).values() if data.get(metric) is not None]
    return round(100.0 * sum(rates) / len(rates), 2) if rates else None


def alpha_plot(paper: dict, runs: list[dict], path: Path) -> Path | None:
    """Figure 5: accuracy (left axis, evaluation) and self-check rate (right axis, RL training metrics)
    against α, from table4 runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec = paper["table4"]
    benches = list(spec["benchmarks"].values())
    points = []
    for run in runs:
        tags = run.get("tags") or {}
        if tags.get("table") == "table4" and "alpha" in tags:
            accs = [_acc(run, b) for b in benches]
            points.append((float(tags["alpha"]), _mean(accs), training_self_check_rate(run)))
    points.sort()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    paper_x = [float(spec["alpha"][r]) for r in spec["rows"]]
    ax.plot(paper_x, [v[3] for v in spec["rows"].values()], "o--", color="gray", label="accuracy (paper, Table 4)")
    if points:
        ax.plot([p[0] for p in points], [p[1] for p in points], "o-", color="tab:blue", label="accuracy (yours)")
    ax.set_xlabel("self-check weight α")
    ax.set_ylabel("average accuracy (%)")
    ax2 = ax.twinx()
    if points and any(p[2] is not None for p in points):
        ax2.plot([p[0] for p in points], [p[2] for p in points], "s-", color="tab:orange",
                 label="self-check rate (yours, training)")
    ax2.set_ylabel("self-check rate (%)")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=7, loc="lower center")
    ax.set_title("Figure 5: accuracy and self-check rate against α", fontsize=9)
    fig.tight_layout()
    return _save_png(fig, path)


def table1_plot(paper: dict, runs: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t1 = paper["table1"]
    names, avgs, colors = [], [], []
    for rows in t1["groups"].values():
        for name, values in rows.items():
            recomputed = recomputed_average(values)  # bars compare recomputed averages; printed only when a column is missing
            names.append(name if recomputed is not None else f"{name} (printed)")
            avgs.append(recomputed if recomputed is not None else values[5])
            colors.append("tab:green" if name == t1["ours"] else "lightgray")
    for run in runs:
        vals = [_acc(run, b) for b in t1["benchmarks"].values()]
        if _mean(vals) is not None:  # bars compare five-benchmark averages only
            names.append(f"{run['label']} (yours)")
            avgs.append(_mean(vals))
            colors.append("tab:blue")
    fig, ax = plt.subplots(figsize=(6.5, 0.28 * len(names) + 1))
    ax.barh(range(len(names)), avgs, color=colors)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("average accuracy over the five benchmarks (%)")
    ax.set_title("Table 1 averages, recomputed from the five columns: paper (gray, MEDSAGE green), yours (blue)",
                 fontsize=8)
    fig.tight_layout()
    return _save_png(fig, path)


def _save_png(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def run_details(runs: list[dict]) -> str:
    """Per run and benchmark: n, accuracy (headline) and semantic accuracy beside it, unparsed, open
    exact / semantic / recall, self-check rate, per-group breakdown."""
    out = ["### Run details", "", f"Headline: {HEADLINE}.", "",
           "| Run | Benchmark | n | accuracy | semantic accuracy | unparsed | open exact | open semantic | open recall "
           "| self-check % |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    groups = []
    for run in runs:
        for bench, s in sorted(run.get("summaries", {}).items()):
            op = s.get("by_type", {}).get("open", {})
            out.append(f"| {run['label']} | {bench} | {s.get('n', 0)} | {_cell(s.get('accuracy'))} | "
                       f"{_cell(s.get('semantic_accuracy'))} | {s.get('unparsed', 0)} | {_cell(op.get('exact'))} | "
                       f"{_cell(op.get('semantic'))} | {_cell(op.get('recall'))} | "
                       f"{_cell(s.get('self_check_rate'))} |")
            if s.get("by_group"):
                groups.append(f"- {run['label']} / {bench}: " + ", ".join(
                    f"{g} {_cell(v['accuracy'])} (n={v['n']})" for g, v in s["by_group"].items()))
    if groups:
        out += ["", "Per group (modality / organ / subject):", *groups]
    return "\n".join(out) + "\n"


def write_report(run_dirs: list[Path], out_dir: Path, notes: list[str] = ()) -> dict[str, Path]:
    """The tables, plots and ``report.md``; ``notes`` are said first (e.g. "offline templates: not the paper's data")."""
    from medsage.eval.report.miniature import is_miniature, miniature_notes, miniature_plot, miniature_tables

    paper = paper_numbers()
    runs = find_runs(run_dirs)
    paper_runs = [r for r in runs if not is_miniature(r)]  # a synthetic task's scores never sit beside the paper's
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    sections = [f"# medsage report\n\n{len(runs)} run(s) from {', '.join(map(str, run_dirs))}. "
                f"Paper numbers: {PAPER_FILE.name} (as printed).\n", *(f"> **{n}**\n" for n in notes)]
    if paper_runs or not runs:  # a report of miniature runs only has no row to put beside the paper's
        tables = {"table1": table1(paper, paper_runs), "table2": table2(paper, paper_runs),
                  **{k: ablation_table(paper, paper_runs, k) for k in ("table3", "table4", "table5")}}
        for key, table in tables.items():
            _write_table(written, out_dir, key, table, paper[key].get("notes", []), sections)
        written["table1.png"] = table1_plot(paper, paper_runs, out_dir / "table1.png")
        written["figure5_alpha.png"] = alpha_plot(paper, paper_runs, out_dir / "figure5_alpha.png")
        sections.append("![Table 1](table1.png)\n\n![Figure 5](figure5_alpha.png)\n")
    if mini := miniature_tables(runs):
        for key, table in mini.items():
            _write_table(written, out_dir, key, table, miniature_notes(runs), sections)
        written["miniature.png"] = miniature_plot(mini, out_dir / "miniature.png")
        sections.append("![Miniature](miniature.png)\n")
    sections.append(run_details(runs))
    from medsage.eval.report.blind import blind_section

    sections.append(blind_section(runs))
    written["report.md"] = atomic_write_text(out_dir / "report.md", "\n".join(sections))
    return written


def _write_table(written: dict, out_dir: Path, key: str, table: Table, notes: list[str], sections: list[str]) -> None:
    """``<key>.csv`` and ``<key>.md`` into ``out_dir``, and the Markdown into the report's sections."""
    sections.append(table.markdown(notes))
    written[f"{key}.csv"] = atomic_write_text(out_dir / f"{key}.csv", table.csv())
    written[f"{key}.md"] = atomic_write_text(out_dir / f"{key}.md", table.markdown(notes))


def add_arguments(parser) -> None:
    parser.description = __doc__.split("\n\n")[0]
    parser.add_argument("runs", nargs="*", default=["runs/eval"],
                        help="folders searched for run.json (default: runs/eval)")
    parser.add_argument("--out", default="runs/report", help="output folder (default: runs/report)")


def main(argv: list[str] | None = None) -> int:
    from medsage.launch.cli import parse

    args = parse("report", argv)
    written = write_report([Path(r) for r in args.runs], Path(args.out))
    for name, path in written.items():
        print(f"  {name:<20} {path}")
    return 0
