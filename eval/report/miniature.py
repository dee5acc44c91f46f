"""The miniature's tables in ``medsage report``: the method on the generated lesion task, a synthetic
task and NOT the paper's benchmarks, so its runs are kept out of the paper tables.

A run joins through its tags (``eval.tags``): ``{task: miniature, table: table5, row: "SFT + RL"}`` is one of
Table 5's rows (SFT, SFT + RL, SFT + RL + Self), ``{task: miniature, table: table4, alpha: 0.2}`` a point of the
α sweep. One row per run and benchmark, with the columns the issue's targets are stated in: accuracy per question
kind (``by_kind`` of the summary: presence yes/no, quadrant, density, count), overall accuracy, mean ``<LOC>`` IoU,
strict LVKC format rate, the RL training's self-check and correction rates (its ``metrics.jsonl``, tag
``train_metrics``), the evaluation's second attempt with the answer-key trigger (``self_correction``: Acc@t1,
Acc@t2, Δ(i→c), Δ(c→i); ``medsage.eval.retry``) and, when the run has a blind pass (``eval.blind``), yes/no accuracy
with every image blank. Markdown, CSV and one PNG, like the paper tables.
"""

from __future__ import annotations

from pathlib import Path

TASK = "miniature"
# by_kind key -> column. The density question is the label choice of recipes/data/miniature.yaml (kind "choice").
KIND_COLUMNS = {"presence": "presence yes/no", "quadrant": "quadrant", "choice": "density", "count": "count"}
# What a uniform guess scores per kind (%), said under the table so a number can be read against it.
CHANCE = {"presence": 50.0, "quadrant": 25.0, "choice": 50.0, "count": 25.0}
# The second attempt with the answer-key trigger (eval.retry=answer_key, medsage.eval.retry): SCoRe's metrics, in %.
SELF_CORRECTION = {"Acc@t1": "acc_t1", "Acc@t2": "acc_t2", "Δ(i→c)": "delta_i_to_c", "Δ(c→i)": "delta_c_to_i"}
TRAIN_METRICS = {"self-check % (RL training)": "medsage/self_check_rate",
                 "correction % (RL training)": "medsage/correction_rate"}


def is_miniature(run: dict) -> bool:
    return (run.get("tags") or {}).get("task") == TASK


def _kinds(runs: list[dict]) -> list[str]:
    """The known kinds in their order, then any other kind a summary has."""
    seen = {k for run in runs for s in (run.get("summaries") or {}).values() for k in (s.get("by_kind") or {})}
    return [k for k in KIND_COLUMNS if k in seen] + sorted(seen - set(KIND_COLUMNS))


def _blind_yes_no(run: dict, bench: str) -> float | None:
    blind = (run.get("blind_summaries") or {}).get(bench)
    if not blind:
        return None
    kind = (blind.get("by_kind") or {}).get("presence") or (blind.get("by_type") or {}).get("closed") or {}
    return kind.get("accuracy")


def _values(run: dict, bench: str, s: dict, kinds: list[str]) -> list:
    from medsage.eval.report.tables import training_mean

    by_kind = s.get("by_kind") or {}
    second = s.get("self_correction") or {}
    return [*[(by_kind.get(k) or {}).get("accuracy") for k in kinds], s.get("accuracy"), s.get("loc_iou"),
            s.get("strict_format"), *[second.get(k) for k in SELF_CORRECTION.values()],
            *[training_mean(run, m) for m in TRAIN_METRICS.values()], _blind_yes_no(run, bench)]


def _rows(runs: list[dict], table: str) -> list[tuple[str, dict]]:
    """(row name, run) of the miniature runs tagged for ``table``: Table 5 in the paper's row order, α ascending."""
    from medsage.eval.report.tables import paper_numbers

    chosen = [r for r in runs if is_miniature(r) and (r.get("tags") or {}).get("table") == table]
    if table == "table4":
        chosen = [r for r in chosen if "alpha" in r["tags"]]
        return [(f"α = {float(r['tags']['alpha']):g}", r) for r in sorted(chosen, key=lambda r: float(r["tags"]["alpha"]))]
    order = list(paper_numbers()["table5"]["rows"])
    name = lambda r: r["tags"].get("row") or r["label"]
    return [(name(r), r) for r in sorted(chosen, key=lambda r: (order.index(name(r)) if name(r) in order else len(order),
                                                                  r["label"]))]


def miniature_tables(runs: list[dict]):
    """``{"miniature_table5": Table, "miniature_alpha": Table}`` for the tables that have runs."""
    from medsage.eval.report.tables import Table

    kinds = _kinds([r for r in runs if is_miniature(r)])
    columns = [*[KIND_COLUMNS.get(k, k) for k in kinds], "overall", "<LOC> IoU", "strict format %",
               *SELF_CORRECTION, *TRAIN_METRICS, "blind yes/no"]
    digits = [1] * len(kinds) + [1, 3, 1] + [1] * len(SELF_CORRECTION) + [1, 1, 1]
    titles = {"miniature_table5": ("table5", "Table 5 rows"), "miniature_alpha": ("table4", "α sweep (Table 4 / Figure 5)")}
    out = {}
    for key, (table, what) in titles.items():
        rows = _rows(runs, table)
        if not rows:
            continue
        t = Table(f"Miniature, a synthetic lesion task (not the paper's benchmarks): {what}", columns, digits=digits)
        for name, run in rows:
            for bench, s in sorted((run.get("summaries") or {}).items()):
                t.add(f"Your runs ({bench})", f"{name} [{run['label']}]", _values(run, bench, s, kinds))
        out[key] = t
    return out


def miniature_notes(runs: list[dict]) -> list[str]:
    kinds = _kinds([r for r in runs if is_miniature(r)])
    chance = ", ".join(f"{KIND_COLUMNS.get(k, k)} {CHANCE[k]:.0f} %" for k in kinds if k in CHANCE)
    return [("Generated CT-like slices with 0-2 lesions (launch/demo/lesions.py): a smoke run of the whole method, "
             "not comparable with any paper number."),
            f"Accuracies in %; a uniform guess scores {chance}." if chance else "Accuracies in %.",
            "<LOC> IoU: mean IoU (0-1) of the first <LOC> box against the truth box, over items that have one.",
            ("Overall and per kind: the first answer, no trigger (as deployed). Acc@t1, Acc@t2, Δ(i→c), Δ(c→i): the "
             "evaluation's second attempt with the answer-key trigger, as in RL training (eval.retry=answer_key: a "
             "wrong first answer gets the self-check request; an oracle, so not a deployable score); empty where "
             "the run had no trigger."),
            ("Self-check and correction rates (RL training): means over the training steps; "
             "blind yes/no: the same model with every image blank (chance is 50 %).")]


def miniature_plot(tables: dict, path: Path) -> Path:
    """Accuracy per question kind and overall for every row of both miniature tables, chance levels dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from medsage.eval.report.tables import _save_png

    rows = [(name, values, t) for t in tables.values() for _, name, values in t.rows]
    first = next(iter(tables.values()))
    n_acc = first.columns.index("overall") + 1
    kinds = first.columns[:n_acc]
    fig, ax = plt.subplots(figsize=(2.5 + max(4.0, 0.25 * len(kinds) * max(1, len(rows))), 3.8))
    width = 0.8 / max(1, len(rows))
    for i, (name, values, _) in enumerate(rows):
        ax.bar([k + i * width for k in range(len(kinds))], [v or 0.0 for v in values[:n_acc]], width, label=name)
    by_column = {KIND_COLUMNS[k]: c for k, c in CHANCE.items()}
    for k, column in enumerate(kinds):
        if column in by_column:
            ax.hlines(by_column[column], k - width / 2, k + 0.8 - width / 2, colors="gray", linestyles="dashed")
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(kinds))], kinds, fontsize=8)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars, never over them
    ax.set_title("Miniature (synthetic lesion task, not the paper's benchmarks); dashed: chance", fontsize=8)
    fig.tight_layout()
    return _save_png(fig, path)
