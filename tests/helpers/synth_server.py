"""Helpers for the synthesis tests: a SCRIPTED loopback server speaking the chat-completions wire format.

It is not a model. It exists for what a real server cannot be made to do on demand: answer 429, 500,
late, malformed or empty, and (``LvkcScript``) give stage-appropriate text so the keep path, the
regeneration path and resume-after-kill can be checked. The real-engine tests use
``llamafactory-cli api`` instead. It binds 127.0.0.1 only. Tests import it by name: tests/helpers is
on pytest's ``pythonpath`` (pyproject.toml).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # the default backlog of 5 refuses a burst of 32 new connections
from typing import Callable

# script(request_body: dict, headers: dict) -> (status, body: dict | bytes, delay_s[, response headers])
Script = Callable[[dict, dict], tuple[int, object, float]]


def completion(text: str | None, prompt_tokens: int = 11, completion_tokens: int = 7) -> dict:
    return {"id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": "scripted",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


class LoopbackServer:
    """A threaded HTTP/1.1 server on 127.0.0.1 that answers ``POST /v1/chat/completions`` by ``script``."""

    def __init__(self, script: Script):
        self.script = script
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.answered = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out as separate writes: no 40 ms Nagle stall

            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                with outer._lock:
                    outer.requests.append(body)
                    outer.headers.append({k.lower(): v for k, v in self.headers.items()})
                    outer.in_flight += 1
                    outer.max_in_flight = max(outer.max_in_flight, outer.in_flight)
                try:
                    status, payload, delay, *extra = outer.script(body, dict(self.headers))
                    if delay:
                        time.sleep(delay)
                    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in (extra[0] if extra else {}).items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                    with outer._lock:
                        outer.answered += 1
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)
                finally:
                    with outer._lock:
                        outer.in_flight -= 1

        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "LoopbackServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def sequence(*answers):
    """A script that gives ``answers`` in order, then keeps giving the last one."""
    state = {"i": 0}

    def script(body, headers):
        i = min(state["i"], len(answers) - 1)
        state["i"] += 1
        return answers[i]

    return script


def user_text(body: dict) -> str:
    content = body["messages"][-1]["content"]
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content if p.get("type") == "text")


def n_images(body: dict) -> int:
    content = body["messages"][-1]["content"]
    return 0 if isinstance(content, str) else sum(p.get("type") == "image_url" for p in content)


def field(text: str, name: str) -> str:
    """The value of a ``Name: value`` line of our prompts (the scripted server reads its request)."""
    for line in text.splitlines():
        if line.startswith(f"{name}:"):
            return line.split(":", 1)[1].strip()
    return ""


class LvkcScript:
    """Answers each synthesis stage sensibly, recognising the stage by its system prompt.

    ``leak_first_know``: the first knowledge answer for a prompt names ``leak_word`` (the label), so
    the regeneration path runs; ``reject_if``: verifier answers inconsistent when the reference
    answer contains that word; ``hold_after``: answer that many requests, then hold the rest (resume tests).
    """

    def __init__(self, prompts: dict, *, leak_first_know: bool = False, leak_word: str = "liver",
                 reject_if: str | None = None, hold_after: int | None = None, delay: float = 0.0,
                 proposal: dict | None = None, roi_relevant: bool = True):
        self.stage_of = {p.system.strip(): stage for stage, p in prompts.items()}
        self.leak_first_know, self.leak_word = leak_first_know, leak_word
        self.reject_if, self.hold_after, self.delay = reject_if, hold_after, delay
        # RoI proposal: the region proposed (a box on the 0-1000 grid by default) and the check's verdict.
        self.proposal = proposal or {"box_2d": [250, 300, 700, 800], "label": "right upper abdomen"}
        self.roi_relevant = roi_relevant
        self.seen_know: Counter = Counter()
        self.stages: Counter = Counter()
        self.count = 0
        self.release = threading.Event()
        self.answered: list[str] = []  # request bodies that got an answer, as sorted JSON
        self._lock = threading.Lock()

    def __call__(self, body: dict, headers: dict):
        with self._lock:
            self.count += 1
            n = self.count
        if self.hold_after is not None and n > self.hold_after:
            self.release.wait(60)  # held until the test releases it; the client is killed meanwhile
            return 503, {"error": {"message": "held"}}, 0.0
        with self._lock:
            self.answered.append(json.dumps(body, sort_keys=True))
        stage = self.stage_of.get(body["messages"][0]["content"].strip(), "unknown")
        self.stages[stage] += 1
        text = user_text(body)
        if stage == "loc":
            reply = "The region of interest is in the right upper abdomen, beneath the diaphragm."
        elif stage == "vis":
            reply = ("Context: the abdominal wall and spine are visible. Region: a rounded, sharply marginated "
                     "focus brighter than the surrounding parenchyma.")
        elif stage == "know":
            with self._lock:
                self.seen_know[text] += 1
                first = self.seen_know[text] == 1
            if self.leak_first_know and first:
                reply = f"- A bright focus in this organ is typical of a {self.leak_word} lesion."
            else:  # the angle shapes the knowledge, as it would a model's: templates give distinct trajectories
                reply = ("- A focal area denser than its parenchyma indicates a focal lesion.\n- Sharp margins favour a "
                         f"contained process.\n- {field(text, 'Interpretation angle')}")
        elif stage == "con":
            reply = json.dumps({"conclusion": "The bright, sharply marginated focus meets the criteria for a focal lesion.",
                                "answer": field(text, "Reference answer")})
        elif stage == "verify":
            bad = self.reject_if is not None and self.reject_if in field(text, "Reference answer").lower()
            reply = json.dumps({"consistent": not bad, "problems": [
                {"kind": "cross_stage_contradiction", "detail": "visual analysis and conclusion disagree"}] if bad else []})
        elif stage == "propose":
            reply = "Here is the region: " + json.dumps(self.proposal)
        elif stage == "roi_check":
            reply = json.dumps({"relevant": self.roi_relevant,
                                "reason": "the region holds the finding" if self.roi_relevant else "it shows the spine"})
        else:
            return 400, {"error": {"message": "unknown stage"}}, 0.0
        return 200, completion(reply), self.delay
