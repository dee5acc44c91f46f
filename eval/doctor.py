"""``medsage eval doctor ROOT``: what each benchmark's folder under ROOT holds, before any model runs.

Per benchmark (the recipe group's paths, ``eval.data_root=ROOT``): the folder, the layout read and
the annotation files, every published split found with its item count against the published count,
the loader's own counts (rows before de-duplication, test items kept out of train), repeated
(image, question, answer) items, missing images, and the question-type split. Problems (exit 1):
a benchmark folder or its recipe split missing, a file that does not load, a count that differs
from the published one, missing images. Images embedded in parquet are written to a temporary
folder, not the cache.
"""

from __future__ import annotations

import tempfile
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from medsage.eval.benchmarks.base import BenchmarkDataError, MissingDataError, SplitSizeWarning, UnknownSplitError


@dataclass
class SplitReport:
    split: str
    n: int | None = None
    published: int | None = None
    layout: str | None = None
    files: list[str] = field(default_factory=list)
    stats: dict = field(default_factory=dict)
    types: dict = field(default_factory=dict)
    repeats: int = 0
    missing_images: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@dataclass
class BenchmarkReport:
    name: str
    path: str
    splits: list[SplitReport] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and not any(s.problems for s in self.splits)


def check_split(cls, path: str, split: str, options: dict, image_cache: Path, required: bool) -> SplitReport | None:
    """Load one split leniently; ``None`` when an optional split is simply not in the release."""
    report = SplitReport(split)
    bench = cls(path, split=split, image_cache=image_cache, strict=False, **options)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SplitSizeWarning)
            samples = bench.load()
    except (UnknownSplitError, MissingDataError) as err:
        if not required:
            return None
        report.problems.append(str(err))
        return report
    except (BenchmarkDataError, OSError, ValueError) as err:
        report.problems.append(f"does not load: {err}")
        return report
    report.n, report.published = len(samples), bench.published_size()
    report.layout, report.files, report.stats = bench.layout, bench.files_read, dict(bench.stats)
    report.types = dict(sorted(Counter(s.question_type for s in samples).items()))
    keys = Counter((tuple(s.images), " ".join(s.question.lower().split()), s.answer.lower()) for s in samples)
    report.repeats = sum(c - 1 for c in keys.values())
    report.missing_images = bench.missing_images
    if report.published is not None and report.n != report.published:
        report.problems.append(f"{report.n} items, the published split has {report.published}")
    if report.missing_images:
        report.problems.append(f"{len(report.missing_images)} missing image(s)")
    types = cls.info.published_types.get(split)
    if types and report.n == report.published and types != report.types:
        rule = Counter(s.metadata.get("type_rule") for s in samples).most_common(1)[0][0]
        report.notes.append(f"question types {report.types} differ from the release's {types} (types here by: {rule})")
    return report


def diagnose(root: str | Path, groups: tuple[str, ...] = ("paper_five",)) -> list[BenchmarkReport]:
    """A report per benchmark of the recipe groups ``recipes/eval/benchmarks/<group>.yaml``."""
    from omegaconf import OmegaConf

    from medsage.recipes import compose
    from medsage.registry import BENCHMARKS

    reports = []
    with tempfile.TemporaryDirectory(prefix="medsage-doctor-") as tmp:
        for group in groups:
            cfg = compose("eval", [f"eval.data_root={Path(root).resolve()}", f"eval/benchmarks={group}"])
            for name, spec in OmegaConf.to_container(cfg.eval.benchmarks, resolve=True).items():
                cls = BENCHMARKS.get(name)
                report = BenchmarkReport(name, str(spec["path"]))
                reports.append(report)
                if not Path(spec["path"]).exists():
                    report.problems.append(f"not found (the recipe reads it from {spec['path']}; "
                                           f"published at {cls.info.published_at})")
                    continue
                options = {k: v for k, v in spec.items() if k not in ("path", "limit", "split")}
                wanted = spec.get("split") or cls.info.default_split
                for split in dict.fromkeys([wanted, *cls.info.published_sizes, "train"]):
                    found = check_split(cls, spec["path"], split, options, Path(tmp) / name, split == wanted)
                    if found is not None:
                        report.splits.append(found)
    return reports


def render(reports: list[BenchmarkReport]) -> str:
    lines = []
    for r in reports:
        lines.append(f"{r.name}: {'ok' if r.ok else 'PROBLEM'}  ({r.path})")
        lines += [f"  ! {p}" for p in r.problems]
        for s in r.splits:
            if s.n is None:
                lines += [f"  {s.split}: ! {p}" for p in s.problems]
                continue
            published = f" / published {s.published}" if s.published is not None else ""
            extra = "".join(f", {k} {v}" for k, v in s.stats.items())
            types = ", ".join(f"{k} {v}" for k, v in s.types.items())
            lines.append(f"  {s.split}: {s.n} items{published} [{types}]{extra}; repeated items {s.repeats}; "
                         f"missing images {len(s.missing_images)}; layout {s.layout}: {', '.join(s.files)}")
            lines += [f"    ! {p}" for p in s.problems]
            lines += [f"    note: {n}" for n in s.notes]
            lines += [f"    missing: {m}" for m in s.missing_images[:3]]
    return "\n".join(lines)
