"""``medsage view PATH``: a static HTML view of data, rollouts or predictions, boxes drawn on the images.

    medsage view out/data                      # a pipeline run: kept records and rejections with reasons
    medsage view out/synth                     # a synthesis run: kept / rejected trajectories, attempts
    medsage view out/data/sft/sage_sft.json    # an SFT data file (LLaVA JSON)
    medsage view rollouts/step_10.jsonl        # an RL rollout dump: rewards per component, self-check span
    medsage view out/eval --data vqa_rad=/data/vqa_rad   # evaluation: verdicts with the scoring reason
    medsage view PATH --out DIR --serve        # write DIR/index.html, then serve DIR on 127.0.0.1

What PATH may be and how it is read: ``medsage.eval.view.load``. The report is a folder:
``index.html``, ``viewer.css``, ``viewer.js`` (the page, copied from static/ by ``page.py``),
``data/index.js`` (a compact index the page filters in the browser), ``data/items-NNNNN.js`` (the items, loaded a page at a time, so tens of thousands of
items stay responsive) and ``images/`` (copies of the images, hard links where the disk allows).
Every file is written atomically. No network, no CDN: it opens from disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from medsage.eval.view.load import Loaded, ViewerInputError, ViewItem, load

CHUNK_SIZE = 100   # items per data/items-NNNNN.js
PAGE_SIZE = 25     # items per page on screen (the page can change it)
NONE = "(none)"

# (key in the URL hash, title in the page, multi-valued)
FACETS: tuple[tuple[str, str, bool], ...] = (
    ("source", "Source / benchmark", False),
    ("type", "Question type", False),
    ("modality", "Modality", False),
    ("verdict", "Verdict", False),
    ("reason", "Rejection / scoring reason", True),
    ("flag", "Flags", True),
)


@dataclass
class Report:
    index: Path     # the page to open
    items: int
    problems: int   # items shown with a named problem


def _facet_values(item: ViewItem) -> list:
    flags = list(item.flags)
    if item.check is not None:
        flags.append("self-check retry")
    if item.all_problems():
        flags.append("has problems")
    return [item.source or NONE, item.question_type or NONE, item.modality or NONE, item.verdict,
            sorted(set(item.reason_codes)), sorted(set(flags))]


class _Images:
    """Copies images beside the report once each (a hard link when on the same disk)."""

    def __init__(self, out: Path):
        self.dir = out / "images"
        self.done: dict[str, str] = {}

    def __call__(self, path: str) -> str:
        if path in self.done:
            return self.done[path]
        src = Path(path)
        name = hashlib.sha1(str(src).encode()).hexdigest()[:16] + src.suffix.lower()
        dest = self.dir / name
        if not dest.exists():
            self.dir.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{name}.tmp")
            try:
                os.link(src, tmp)
            except OSError:  # another disk, or links not allowed
                shutil.copyfile(src, tmp)
            os.replace(tmp, dest)
        self.done[path] = f"images/{name}"
        return self.done[path]


def _item_json(uid: int, item: ViewItem, images: _Images) -> dict:
    """What the page needs for one item; region pixels come from ``Region.to_pixels`` on the first image."""
    from medsage.scaffold import GRID, Region

    first = item.images[0] if item.images else None
    w = first.width if first and first.width else GRID
    h = first.height if first and first.height else GRID
    traces = []
    for t in item.traces:
        d = asdict(t)
        for r in d["regions"]:
            r["px"] = [round(v, 2) for v in Region(r["kind"], tuple(r["coords"]), r["label"]).to_pixels(w, h)]
        traces.append(d)
    out = {
        "uid": uid, "id": item.id, "kind": item.kind, "where": item.where, "source": item.source,
        "question_type": item.question_type, "modality": item.modality, "verdict": item.verdict,
        "reasons": item.reasons, "question": item.question, "options": item.options,
        "ground_truth": item.ground_truth, "answer": item.answer, "traces": traces, "check": item.check,
        "rewards": item.rewards, "judge": item.judge, "rois": item.rois if first and first.width else [],  # pixels need the image
        "images": [{"src": images(im.path) if im.path and not im.problem else None, "given": im.given,
                    "problem": im.problem, "w": im.width, "h": im.height} for im in item.images],
        "problems": item.all_problems(), "details": item.details,
    }
    for roi in out["rois"]:
        roi["px"] = roi["box"]  # RoIs are pixel boxes (x1, y1, x2, y2) already
    if item.rois and not out["rois"]:  # not drawn, still shown
        out["details"] = {**item.details, "RoIs (not drawn: the image is missing)": item.rois}
    return out


def _js(payload: str) -> str:
    # "</script" inside a string cannot close anything in an external script, but U+2028/2029 are
    # line breaks to old JS parsers: escape them so any text is a valid script literal.
    return payload.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def build_report(loaded: Loaded, out: str | Path, page_size: int = PAGE_SIZE, chunk_size: int = CHUNK_SIZE) -> Report:
    """Write the report folder for ``loaded`` into ``out``; returns where the page is."""
    from medsage.eval.view.page import write_page

    from medsage.io import atomic_write_text

    out = Path(out)
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    images = _Images(out)
    values: list[dict[str, int]] = [{} for _ in FACETS]

    def code(i: int, v: str) -> int:
        return values[i].setdefault(v, len(values[i]))

    rows = []
    n_chunks = 0
    problems = 0
    for start in range(0, max(len(loaded.items), 1), chunk_size):
        chunk = []
        for uid, item in enumerate(loaded.items[start:start + chunk_size], start):
            payload = _item_json(uid, item, images)
            problems += bool(payload["problems"])
            chunk.append(payload)
            row: list = [item.id]
            for i, (v, (_, _, multi)) in enumerate(zip(_facet_values(item), FACETS)):
                row.append([code(i, x) for x in v] if multi else code(i, v))
            rows.append(row)
        atomic_write_text(data / f"items-{n_chunks:05d}.js",
                          _js(f"window.medsageChunk({n_chunks}, {json.dumps(chunk, ensure_ascii=False)});\n"))
        n_chunks += 1
    for stale in data.glob("items-*.js"):  # chunks of an earlier, larger report in the same folder
        if int(stale.stem.split("-")[1]) >= n_chunks:
            stale.unlink()
    verdicts = Counter(it.verdict for it in loaded.items)
    index = {
        "kind": loaded.kind, "path": str(loaded.path), "notes": loaded.notes,
        "summary": ", ".join(f"{v} {n}" for v, n in verdicts.most_common()) or "no items",
        "page_size": page_size, "chunk_size": chunk_size,
        "facets": [{"key": key, "title": title, "multi": multi, "values": list(values[i])}
                   for i, (key, title, multi) in enumerate(FACETS)],
        "rows": rows,
    }
    atomic_write_text(data / "index.js",
                      _js(f"window.MEDSAGE_INDEX = {json.dumps(index, ensure_ascii=False, separators=(',', ':'))};\n"))
    page = write_page(out)
    return Report(page, len(loaded.items), problems)


def default_out(path: Path) -> Path:
    """Beside the input: ``<dir>/view`` for a folder, ``<file stem>.view`` for a file."""
    return path / "view" if path.is_dir() else path.with_name(f"{path.stem}.view")


def make_server(folder: Path, port: int = 0):
    """An HTTP server for ``folder`` bound to 127.0.0.1 only (port 0: any free port)."""
    import functools
    import http.server

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:  # one line per chunk request would drown the terminal
            pass

    return http.server.ThreadingHTTPServer(("127.0.0.1", port), functools.partial(Quiet, directory=str(folder)))


def serve(folder: Path, port: int = 0) -> None:
    """Serve ``folder`` on 127.0.0.1 until interrupted (large reports load faster than from disk)."""
    with make_server(folder, port) as httpd:
        print(f"serving {folder} at http://127.0.0.1:{httpd.server_address[1]}/index.html (Ctrl-C to stop)",
              flush=True)
        try:
            httpd.serve_forever()
        except KeyboardInterrupt:
            pass


def add_arguments(parser) -> None:
    from medsage.launch.cli import name_value

    parser.description = ("Write a static HTML view (boxes drawn on the images, LVKC stages side by side, decisions "
                          "and their reasons, filters) of an SFT data file, a pipeline run directory, an RL rollout "
                          "dump, or evaluation predictions / verdicts.")
    parser.add_argument("path", help="file or directory to view")
    parser.add_argument("--out", default=None, help="report folder (default: beside PATH, <dir>/view or <stem>.view)")
    parser.add_argument("--serve", action="store_true", help="serve the report on 127.0.0.1 after writing it")
    parser.add_argument("--port", type=int, default=0, help="port for --serve (default: any free port)")
    parser.add_argument("--data", action="append", default=[], metavar="NAME=PATH", type=name_value,
                        help="load benchmark NAME from PATH to show the images of predictions; repeatable")
    parser.add_argument("--page-size", type=int, default=PAGE_SIZE, help="items per page (default %(default)s)")


def main(argv: list[str] | None = None) -> int:
    from medsage.launch.cli import parse

    args = parse("view", argv)
    data = dict(args.data)
    path = Path(args.path)
    try:
        loaded = load(path, data)
    except ViewerInputError as err:
        print(f"medsage view: {err}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else default_out(path)
    report = build_report(loaded, out, page_size=max(1, args.page_size))
    print(f"{loaded.kind}: {report.items} item(s), {report.problems} with problems named")
    print(report.index.resolve())
    if args.serve:
        serve(out, args.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
