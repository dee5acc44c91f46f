"""The ``medsage`` command: one argparse tree, one verb per stage.

    medsage <verb> [flags] [hydra overrides]

Each verb's module adds its own arguments to its subparser (``add_arguments(parser)``) and parses
through ``parse(verb, argv)``, so every ``medsage <verb> --help`` has the same shape: the verb's
one-line description, its flags, ``override ...`` for Hydra overrides, and examples. A verb's module
is imported only when that verb runs, so ``medsage --help`` stays instant (no torch, ray or engine
import).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
import textwrap

# verb -> (module with ``add_arguments(parser)`` and ``main(argv)``, one-line help). Order is the order
# users meet them.
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("medsage.data_pipeline.cli", "build SAGE-sft / SAGE-rl from raw sources (ingest, filter, RoIs, dedup, write)"),
    "sft": ("medsage.launch.sft", "structured SFT through LLaMA-Factory from a Hydra recipe"),
    "rl": ("medsage.launch.rl", "GRPO with the self-check retry through verl (or plain GRPO through EasyR1)"),
    "eval": ("medsage.eval.cli", "run and score the benchmarks; `eval score` scores any predictions file"),
    "report": ("medsage.eval.report.tables", "render the paper's tables and plots beside your runs"),
    "pipeline": ("medsage.launch.pipeline.app", "data -> sft -> rl -> eval -> report as resumable Ray jobs"),
    "scorer": ("medsage.plugins.scorer.cli", "train or evaluate the trajectory quality scorer"),
    "view": ("medsage.eval.view.build", "write a static HTML view of data, rollouts or predictions"),
    "env": ("medsage.launch.env", "build (setup) and check the per-stage Python environments"),
    "demo": ("medsage.launch.demo.run", "run the embedded demo end to end on CPU (no network, no GPU)"),
    "tiny-model": ("medsage.launch.demo.tiny_model_cli", "build a random few-MB Qwen2.5-VL for tests and the demo"),
}

DESCRIPTION = ("medsage: structured medical visual reasoning (Localization -> Visual analysis -> Knowledge matching "
               "-> Conclusion), trained by SFT and GRPO with a self-check retry.")


class Formatter(argparse.HelpFormatter):
    """One formatter for every verb: prose is wrapped to the terminal, indented lines (examples, usage
    lines from a module docstring) are kept as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        out: list[str] = []
        prose: list[str] = []

        def flush() -> None:
            if prose:
                out.append(textwrap.fill(" ".join(prose), width, initial_indent=indent, subsequent_indent=indent))
                prose.clear()

        for line in text.replace("``", "`").splitlines():
            if not line.strip() or line.startswith(" "):
                flush()
                out.append(indent + line)
            else:
                prose.append(line.strip())
        flush()
        return "\n".join(out)


def add_overrides(parser: argparse.ArgumentParser, example: str) -> None:
    """The Hydra overrides every recipe-driven verb takes last, described the same way everywhere."""
    parser.add_argument("overrides", nargs="*", metavar="override",
                        help=f"Hydra overrides (key=value, group=option, +key=value), e.g. {example}")


def name_value(text: str) -> tuple[str, str]:
    """``type=`` for NAME=VALUE flags (``--data vqa_rad=/data/vqa_rad``)."""
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def add_commands(parser: argparse.ArgumentParser, dest: str = "command") -> argparse._SubParsersAction:
    """Sub-commands of a verb (``medsage data run``, ``medsage eval score``), formatted like the verbs."""
    sub = parser.add_subparsers(dest=dest, required=True, metavar="<command>", title="commands")
    original = sub.add_parser

    def add_parser(name: str, **kwargs) -> argparse.ArgumentParser:
        kwargs.setdefault("description", kwargs.get("help"))
        kwargs.setdefault("formatter_class", Formatter)
        return original(name, **kwargs)

    sub.add_parser = add_parser
    return sub


def tree(verb: str | None = None) -> argparse.ArgumentParser:
    """The whole command tree; only ``verb``'s module is imported to fill in its arguments."""
    from medsage import __version__

    root = argparse.ArgumentParser(prog="medsage", description=DESCRIPTION, formatter_class=Formatter,
                                   epilog="Run `medsage <command> --help` for a command's own options.")
    root.add_argument("-V", "--version", action="version", version=f"medsage {__version__}")
    sub = add_commands(root)
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_)
        if name == verb:
            importlib.import_module(module).add_arguments(p)
            root.verb_parser = p
    return root


def parse(verb: str, argv: list[str] | None, *, intermixed: bool = False, known: bool = False):
    """``medsage <verb> argv`` parsed by the tree; ``known`` returns (args, the arguments left over)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    root = tree(verb)
    if intermixed:  # flags among the overrides (argparse cannot intermix through sub-parsers: parse the verb's own)
        return root.verb_parser.parse_intermixed_args(argv)
    return root.parse_known_args([verb, *argv]) if known else root.parse_args([verb, *argv])


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help", "-V", "--version"):
        try:
            tree().parse_args(argv[:1] if argv and argv[0] != "help" else ["--help"])
        except SystemExit as stop:  # argparse exits after printing help or the version
            return int(stop.code or 0)
    verb, rest = argv[0], argv[1:]
    if os.environ.get("MEDSAGE_EXIT_WITH_PARENT") == "1":  # set for pipeline stages (launch/pipeline/dag.py)
        from medsage.runtime import exit_with_parent

        exit_with_parent()
    if verb not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(verb, list(COMMANDS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        print(f"medsage: unknown command {verb!r}.{hint}\n", file=sys.stderr)
        tree().print_help(sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[verb][0])
    try:
        return int(module.main(rest) or 0)
    except OSError as err:
        if err.errno not in UNUSABLE_PLACE:
            raise
        print(f"medsage {verb}: {describe_os_error(err)}", file=sys.stderr)
        return 1 if err.errno in (errno.ENOSPC, errno.EDQUOT) else 2


# Errors of the place a command reads or writes, not of medsage: said in one line naming the path, never a traceback.
UNUSABLE_PLACE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR, errno.EISDIR,
                  errno.EEXIST}


def describe_os_error(err: OSError) -> str:
    where = " -> ".join(str(f) for f in (err.filename, err.filename2) if f is not None) or "(no path given)"
    fix = {errno.ENOSPC: "the disk is full: free space, then rerun the same command (finished work is kept)",
           errno.EDQUOT: "the disk quota is used up: free space, then rerun the same command (finished work is kept)",
           errno.ENOTDIR: "a part of this path is a file, not a folder: choose another output folder",
           errno.EEXIST: "a file of that name is in the way: choose another output folder or move the file",
           errno.EISDIR: "a folder is where a file was expected",
           errno.EROFS: "the file system is read-only: choose a writable output folder",
           }.get(err.errno, "no permission: choose a folder you can write (or read) or change its permissions")
    return f"{err.strerror or err} ({errno.errorcode.get(err.errno, err.errno)}): {where}; {fix}"


if __name__ == "__main__":
    raise SystemExit(main())
