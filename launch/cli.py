"""The ``medsage`` command: one verb per stage.

Each verb lives in its stage package and is imported only when it runs, so ``medsage --help`` stays
instant (no torch, ray or engine import). A verb whose module is not part of this checkout yet is
not listed.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys

# verb -> (module with a ``main(argv)``, one-line help). Order is the order users meet them.
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("medsage.data_pipeline.cli", "build SAGE-sft / SAGE-rl from raw sources (ingest, filter, RoIs, dedup, write)"),
    "sft": ("medsage.launch.sft", "structured SFT through LLaMA-Factory from a Hydra recipe"),
    "rl": ("medsage.launch.rl", "GRPO with the self-check retry through verl (or plain GRPO through EasyR1)"),
    "eval": ("medsage.eval.cli", "run and score the benchmarks; `eval score` scores any predictions file"),
    "report": ("medsage.eval.report.tables", "render the paper's tables and plots beside your runs"),
    "pipeline": ("medsage.launch.pipeline.app", "data -> sft -> rl -> eval -> report as resumable Ray jobs"),
    "scorer": ("medsage.plugins.scorer.cli", "train or evaluate the trajectory quality scorer"),
    "view": ("medsage.eval.view.build", "write a static HTML view of data, rollouts or predictions"),
    "env": ("medsage.launch.env", "check the per-stage Python environments"),
    "demo": ("medsage.launch.demo.run", "run the embedded demo end to end on CPU (no network, no GPU)"),
    "tiny-model": ("medsage.launch.demo.tiny_model_cli", "build a random few-MB Qwen2.5-VL for tests and the demo"),
}


def available() -> dict[str, tuple[str, str]]:
    out = {}
    for verb, (module, help_) in COMMANDS.items():
        try:
            if importlib.util.find_spec(module) is not None:
                out[verb] = (module, help_)
        except ModuleNotFoundError:  # parent package missing
            pass
    return out


def _usage(verbs: dict[str, tuple[str, str]]) -> str:
    width = max(len(v) for v in verbs)
    lines = [
        "usage: medsage <command> [args...]",
        "",
        "medsage: structured medical visual reasoning (Localization -> Visual analysis ->",
        "Knowledge matching -> Conclusion), trained by SFT and GRPO with a self-check retry.",
        "",
        "commands:",
        *(f"  {v:<{width}}  {h}" for v, (_, h) in verbs.items()),
        "",
        "Run `medsage <command> --help` for a command's own options.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbs = available()
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage(verbs))
        return 0
    if argv[0] in ("-V", "--version"):
        from medsage import __version__

        print(f"medsage {__version__}")
        return 0
    verb, rest = argv[0], argv[1:]
    if os.environ.get("MEDSAGE_EXIT_WITH_PARENT") == "1":  # set for pipeline stages (launch/pipeline/dag.py)
        from medsage.runtime import exit_with_parent

        exit_with_parent()
    if verb not in verbs:
        import difflib

        close = difflib.get_close_matches(verb, list(verbs), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        print(f"medsage: unknown command {verb!r}.{hint}\n\n{_usage(verbs)}", file=sys.stderr)
        return 2
    module = importlib.import_module(verbs[verb][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
