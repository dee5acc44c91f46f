"""The blind-baseline column of ``medsage report``: accuracy with and without the image, per benchmark.

A run folder whose ``run.json`` holds both ``summaries`` (sighted) and ``blind_summaries`` (the same
model with ``eval.blind=true``) gives one row per benchmark: headline accuracy with the image, with a
blank image, and the gain the image brings. Runs without a blind pass are left out.
"""

from __future__ import annotations


def blind_rows(runs: list[dict]) -> list[tuple[str, str, float | None, float | None]]:
    rows = []
    for run in runs:
        for bench, blind in sorted((run.get("blind_summaries") or {}).items()):
            sighted = (run.get("summaries") or {}).get(bench) or {}
            rows.append((run.get("label", "?"), bench, sighted.get("accuracy"), blind.get("accuracy")))
    return rows


def blind_section(runs: list[dict]) -> str:
    """Markdown for the report, or "" when no run has a blind pass."""
    rows = blind_rows(runs)
    if not rows:
        return ""

    def cell(v):
        return "—" if v is None else f"{v:.1f}"

    out = ["### Blind baseline (every image blank)", "",
           "| Run | Benchmark | with image | blank image | gain from the image |", "|---|---|---:|---:|---:|"]
    for label, bench, seen, blind in rows:
        gain = None if seen is None or blind is None else seen - blind
        out.append(f"| {label} | {bench} | {cell(seen)} | {cell(blind)} | {cell(gain)} |")
    return "\n".join(out) + "\n"
