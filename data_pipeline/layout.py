"""What the data stages write, by name: the one place later stages, the viewer and the recipes look them up.

``medsage data run <out>`` (data_pipeline/run.py)::

    records.jsonl   kept records          rejected.jsonl  every rejection, with its reason
    summary.json    counts per source     sft/            LLaVA SFT files     rl/  verl.parquet, easyr1.*

``medsage data synth run --out <out>`` (data_pipeline/synthesis/run.py)::

    kept.jsonl      one record per kept trajectory      rejected.jsonl  every unit not kept, with its attempts
    report.json     counts, calls, tokens (written last: marks a finished run)      sft/  cache/
    retry.jsonl     SFT retry rows (rpa.retry_share; empty by default): wrong τ1, check, corrected τ2

``medsage data synth rl --out <out>`` (data_pipeline/rl_sample.py): ``sage_rl.parquet`` and siblings.
``medsage data dedup --out <out>`` (data_pipeline/dedup.py): ``kept.txt``, ``removed.jsonl``, ``summary.json``.
``medsage data audit --out <out>`` (data_pipeline/audit.py): ``pairs.jsonl`` (each near-duplicate pair), ``summary.json``.
"""

from __future__ import annotations

from pathlib import Path

RECORDS = "records.jsonl"
REJECTED = "rejected.jsonl"
SUMMARY = "summary.json"
SFT_DIR = "sft"
RL_DIR = "rl"
VERL_FILE = "verl.parquet"
KEPT = "kept.jsonl"
RETRY = "retry.jsonl"
SYNTH_REPORT = "report.json"
CACHE_DIR = "cache"
RL_SAMPLE = "sage_rl"
DEDUP_KEPT = "kept.txt"
DEDUP_REMOVED = "removed.jsonl"
AUDIT_PAIRS = "pairs.jsonl"


def shard_file(stem: Path, name: str) -> Path:
    """A data-run shard's part of ``name``: ``<stem>.records.jsonl``, ``<stem>.rejected.jsonl``."""
    return stem.with_suffix(f".{name}")


def rl_sample_files(out: Path, name: str = RL_SAMPLE) -> dict[str, Path]:
    """The balanced SAGE-rl sample's files: verl parquet, EasyR1 JSON lines, records, the rows set aside
    for the prompt budget, summary."""
    return {"verl": out / f"{name}.parquet", "easyr1": out / f"{name}.easyr1.jsonl",
            "records": out / f"{name}.jsonl", "rejected": out / f"{name}.rejected.jsonl",
            "summary": out / f"{name}.summary.json"}
