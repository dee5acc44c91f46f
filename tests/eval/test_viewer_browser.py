"""``medsage view`` reports opened in headless Chromium (Debian's ``chromium``), checked through the DOM.

Chromium is driven through its DevTools protocol (a websocket on 127.0.0.1, no selenium/playwright):
the tests load the report from disk (``file://``, as a user opens it), wait for the page to render,
then read the DOM and the layout, click filters, page through, and keep one screenshot.

    apt-get install -y chromium      # what CI needs; without it these tests skip
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from medsage.eval.view import build as viewer
from medsage.eval.view.load import Loaded, ViewItem, load, rollout_record

from .test_viewer import (
    BOX_GRID,
    lvkc,
    make_eval_run,
    make_image,
    make_pipeline_run,
    make_rollouts,
)

pytestmark = pytest.mark.slow

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
                  "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", "--window-size=1400,1600"]


class Browser:
    """One headless Chromium and one page, spoken to over the DevTools protocol."""

    def __init__(self, exe: str, profile: Path):
        from websockets.sync.client import connect

        self.proc = subprocess.Popen([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text().strip():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as r:
            page = next(t for t in json.load(r) if t["type"] == "page")
        self.ws = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=30)
        self.ids = itertools.count(1)
        self.errors: list[str] = []  # uncaught exceptions and failed loads on the page
        self.send("Runtime.enable")
        self.send("Log.enable")

    def send(self, method: str, **params):
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=60))
            if msg.get("method") == "Runtime.exceptionThrown":
                self.errors.append(json.dumps(msg["params"]["exceptionDetails"])[:500])
            elif msg.get("method") == "Log.entryAdded" and msg["params"]["entry"]["level"] == "error":
                self.errors.append(msg["params"]["entry"].get("text", "")[:500])
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def js(self, expression: str):
        res = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"page error: {res['exceptionDetails']}")
        return res["result"].get("value")

    def wait_rendered(self, timeout: float = 30) -> None:
        """Until the page has rendered the items of the current filter/page state."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.js("document.body && document.body.dataset.ready") in ("1", "error"):
                return
            time.sleep(0.05)
        raise AssertionError("the report did not render in time")

    def open(self, url: str) -> None:
        self.errors.clear()
        self.send("Page.navigate", url="about:blank")
        self.send("Page.navigate", url=url)
        time.sleep(0.1)
        self.wait_rendered()
        assert self.js("document.body.dataset.ready") == "1", self.js("document.getElementById('items').textContent")

    def act(self, expression: str) -> None:
        """Run a user action; then wait for the re-render it causes."""
        self.js("document.body.dataset.ready = '0'")
        self.js(expression)
        self.wait_rendered()

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        if getattr(self, "ws", None):
            self.ws.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium); the viewer's browser "
                    "tests need it")
    pytest.importorskip("websockets.sync.client", reason="the DevTools driver needs the websockets package")
    b = Browser(exe, tmp_path_factory.mktemp("chromium-profile"))
    yield b
    b.close()


@pytest.fixture(autouse=True)
def _no_page_errors(request):
    """Every test ends with no uncaught exception or failed resource load on the page."""
    yield
    if "browser" in request.fixturenames:
        b = request.getfixturevalue("browser")
        b.js("1")  # drain events that arrived after the last command
        assert not b.errors, f"errors on the page: {b.errors}"


def _url(index: Path, fragment: str = "") -> str:
    return index.resolve().as_uri() + (f"#{fragment}" if fragment else "")


def _count(b: Browser) -> tuple[int, int, int]:
    """(items rendered on this page, items matching the filters, items in the report)."""
    status = b.js("(() => { const s = document.getElementById('status').dataset; return [s.matching, s.total]; })()")
    return b.js("document.querySelectorAll('#items article.item').length"), int(status[0]), int(status[1])


def _click_facet(b: Browser, facet: str, value: str) -> None:
    b.act(f"document.querySelector('#facets input[data-facet=\"{facet}\"][data-value=\"{value}\"]').click()")


def test_pipeline_report_counts_boxes_and_filters(browser, tmp_path):
    run = make_pipeline_run(tmp_path / "run")
    # One more kept record with a known box on a known image: 400x200 px, box_2d [250, 100, 750, 500].
    from medsage.records import Sample
    from medsage.scaffold import parse_strict

    img = make_image(tmp_path / "known.png")
    known = Sample("known-box", "roboflow", [str(img)], "Is there a mass?", "yes", "closed", modality="MRI",
                   trajectory=parse_strict(lvkc("mass")))
    with (run / "records.jsonl").open("a") as fh:
        fh.write(known.to_json() + "\n")
    report = viewer.build_report(load(run), tmp_path / "view")

    browser.open(_url(report.index))
    rendered, matching, total = _count(browser)
    assert (rendered, matching, total) == (10, 10, 10)  # 7 kept + 2 rejections + 1 malformed line

    # The box is drawn where box_2d says, in the page's layout, relative to the image as displayed.
    geometry = browser.js("""(async () => {
        const card = document.querySelector('article[data-id="known-box"]');
        card.scrollIntoView();  // images load lazily
        await card.querySelector('.imgwrap img').decode();
        const img = card.querySelector('.imgwrap img').getBoundingClientRect();
        const box = card.querySelector('svg rect.region.box').getBoundingClientRect();
        return {img: [img.left, img.top, img.width, img.height], box: [box.left, box.top, box.width, box.height],
                natural: [card.querySelector('.imgwrap img').naturalWidth],
                label: card.querySelector('svg text.region-label').textContent};
    })()""")
    il, it, iw, ih = geometry["img"]
    bl, bt, bw, bh = geometry["box"]
    y1, x1, y2, x2 = BOX_GRID
    assert geometry["natural"] == [400], "the copied image did not load"
    assert iw > 100 and abs(ih - iw / 2) < 1.5  # displayed at the image's aspect ratio
    assert abs(bl - il - x1 / 1000 * iw) < 1.5 and abs(bt - it - y1 / 1000 * ih) < 1.5
    assert abs(bw - (x2 - x1) / 1000 * iw) < 1.5 and abs(bh - (y2 - y1) / 1000 * ih) < 1.5
    assert geometry["label"] == "mass"

    # Stages side by side, named; the malformed line and the missing image are shown with their problem.
    assert browser.js("document.querySelectorAll('article[data-id=\"known-box\"] .stages [data-stage]').length") == 5
    problems = browser.js("[...document.querySelectorAll('.problems li')].map(li => li.textContent)")
    assert any("not valid JSON" in p for p in problems) and any("image not found" in p for p in problems)

    # Filters: verdict=rejected, then also reason=too-small; the counts beside the boxes follow.
    _click_facet(browser, "verdict", "rejected")
    assert _count(browser) == (2, 2, 10)
    assert set(browser.js("[...document.querySelectorAll('#items article')].map(a => a.dataset.verdict)")) == {"rejected"}
    reason_count = browser.js("document.querySelector('#facets input[data-value=\"too-small\"]').closest('label')"
                              ".querySelector('.n').textContent")
    assert reason_count == "1"
    _click_facet(browser, "reason", "too-small")
    assert _count(browser) == (1, 1, 10)
    assert browser.js("document.querySelector('#items article').dataset.id") == "in-007"
    assert "reason=too-small" in browser.js("location.hash")
    # Source filter: OR inside a facet, AND across facets.
    browser.act("document.getElementById('clear').click()")
    _click_facet(browser, "source", "roboflow")
    assert _count(browser) == (1, 1, 10)
    _click_facet(browser, "source", "demo")
    assert _count(browser)[1] == 9  # 6 demo records + 2 demo rejections + roboflow; not the malformed line

    # A filtered view can be linked to: the hash holds the filter state.
    browser.open(_url(report.index, "modality=MRI"))
    assert _count(browser) == (1, 1, 10)
    shot = browser.screenshot(tmp_path / "viewer-pipeline.png")
    print(f"\nviewer screenshot kept at {shot}")
    assert shot.stat().st_size > 10_000


def test_real_data_run_report(browser, tmp_path):
    from .test_viewer import make_real_data_run

    report = viewer.build_report(load(make_real_data_run(tmp_path)), tmp_path / "view")
    browser.open(_url(report.index))
    assert _count(browser) == (3, 3, 3)
    roi = browser.js("""(() => {
        const r = document.querySelector('#items article[data-verdict="kept"] svg rect.roi[data-origin="annotation"]');
        return ['x', 'y', 'width', 'height'].map(a => Number(r.getAttribute(a)));
    })()""")
    assert roi == [30, 40, 50, 30]  # the COCO bbox, in the image's pixels
    _click_facet(browser, "reason", "no-annotation")
    assert _count(browser) == (1, 1, 3)


def test_rollout_report_marks_self_check_and_rewards(browser, tmp_path):
    report = viewer.build_report(load(make_rollouts(tmp_path)), tmp_path / "view")
    browser.open(_url(report.index, "flag=self-check retry"))
    assert _count(browser) == (1, 1, 3)
    card = browser.js("""(() => {
        const c = document.querySelector('#items article');
        const cells = [...c.querySelectorAll('.stages > div')].map(d => d.dataset.stage || d.textContent);
        return {id: c.dataset.id, check: c.querySelector('.stages .check').textContent,
                order: cells.filter(t => ['τ1 first try', 'self-check', 'τ2 after self-check'].includes(t)),
                rewards: Object.fromEntries([...c.querySelectorAll('table.rewards td')].map(td => [td.dataset.component, td.textContent])),
                dashed: c.querySelectorAll('svg rect.region[stroke-dasharray]').length,
                solid: c.querySelectorAll('svg rect.region:not([stroke-dasharray])').length};
    })()""")
    assert card["id"] == "rl-0" and card["check"].startswith("The box missed")
    assert card["order"] == ["τ1 first try", "self-check", "τ2 after self-check"]
    assert set(card["rewards"]) == {"overall", "accuracy", "format"} and card["rewards"]["accuracy"] == "1.000"
    assert (card["dashed"], card["solid"]) == (1, 1)  # τ1's box dashed, τ2's solid
    browser.act("location.hash = 'verdict=wrong'")
    assert _count(browser) == (1, 1, 3)


def test_eval_report_verdicts_and_reasons(browser, tmp_path):
    report = viewer.build_report(load(make_eval_run(tmp_path / "eval")), tmp_path / "view")
    browser.open(_url(report.index))
    assert _count(browser) == (3, 3, 3)
    _click_facet(browser, "verdict", "wrong")
    reasons = browser.js("[...document.querySelectorAll('#items .reasons li')].map(li => li.textContent)")
    assert _count(browser) == (1, 1, 3) and any("reference is 'no'" in r for r in reasons)
    browser.act("document.getElementById('clear').click()")
    judge = browser.js("Object.fromEntries([...document.querySelectorAll('article[data-id=\"q1\"] table.judge td')]"
                       ".map(td => [td.dataset.component, td.textContent]))")
    assert judge == {"localization": "4", "reasoning": "5"}


def test_large_report_pages_across_chunks(browser, tmp_path):
    img = str(make_image(tmp_path / "a.png"))
    lines = [rollout_record(lvkc(answer="yes" if n % 2 else "no"), "yes", images=[img], id=f"r{n:03d}",
                            rewards={"overall": float(n % 2), "accuracy": float(n % 2)}, data_source=f"src{n % 3}")
             for n in range(230)]
    path = tmp_path / "big.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    report = viewer.build_report(load(path), tmp_path / "view", page_size=50, chunk_size=40)
    browser.open(_url(report.index))
    assert _count(browser) == (50, 230, 230)
    _click_facet(browser, "verdict", "correct")
    assert _count(browser) == (50, 115, 230)
    browser.act("document.querySelector('#pager-top .next').click()")
    browser.act("document.querySelector('#pager-top .next').click()")
    ids = browser.js("[...document.querySelectorAll('#items article')].map(a => a.dataset.id)")
    assert len(ids) == 15 and ids[0] == "r201" and all(int(i[1:]) % 2 for i in ids)  # page 3 of the odd ids
    browser.act("document.getElementById('q').value = 'r22'; document.getElementById('q').dispatchEvent(new Event('input'))")
    assert browser.js("[...document.querySelectorAll('#items article')].map(a => a.dataset.id)") == [
        f"r22{d}" for d in range(1, 10, 2)]


def test_text_in_outputs_is_never_parsed_as_html(browser, tmp_path):
    hostile = lvkc().replace("A bright mass.", "<img src=x onerror=\"document.title='pwned'\"><b>bold</b>")
    path = tmp_path / "h.jsonl"
    path.write_text(json.dumps(rollout_record(hostile, "yes", images=[str(make_image(tmp_path / "a.png"))])) + "\n")
    report = viewer.build_report(load(path), tmp_path / "view")
    browser.open(_url(report.index))
    assert browser.js("document.querySelectorAll('#items .stages b, #items .stages img').length") == 0
    assert "<b>bold</b>" in browser.js("document.querySelector('#items [data-stage=\"VISUAL\"]').textContent")
    assert browser.js("document.title") == "medsage view"


def test_unused_viewitem_defaults_render(browser, tmp_path):
    """An item with nothing but an id (the least a reader can produce) still renders, with its problem."""
    item = ViewItem(id="bare", kind="malformed", where="x:1", verdict="malformed", problems=["x:1: broken"])
    report = viewer.build_report(Loaded("test", tmp_path, [item]), tmp_path / "view")
    browser.open(_url(report.index))
    assert _count(browser) == (1, 1, 1)
    assert browser.js("document.querySelector('.problems li').textContent") == "x:1: broken"
