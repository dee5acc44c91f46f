"""`medsage eval score` on careless or hostile predictions files: every bad line is an
error naming its own line (blank lines counted), a torn last line is reported, never a traceback."""

from __future__ import annotations

import json

import pytest

from medsage.eval.cli import main

GOOD = {"id": "1", "prediction": "<ANSWER>yes</ANSWER>", "question": "q", "answer": "yes", "answer_type": "closed"}


def _score(tmp_path, text: str | bytes, capsys):
    path = tmp_path / "p.jsonl"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    code = main(["score", str(path)])
    return code, capsys.readouterr()


def test_line_numbers_count_leading_blank_lines(tmp_path, capsys):
    bad = {**GOOD, "answer_type": "binary"}
    code, out = _score(tmp_path, "\n\n" + json.dumps(GOOD) + "\n\n" + json.dumps(bad) + "\n", capsys)
    assert code == 2 and "p.jsonl line 5: answer_type 'binary'" in out.err


@pytest.mark.parametrize("field,value,message", [
    ("answer", 3, "'answer' must be a string"),
    ("answer", None, "'answer' must be a string"),
    ("answer", float("nan"), "'answer' must be a string"),
    ("question", ["q"], "'question' must be a string"),
    ("prediction", 7, "needs a string field 'prediction'"),
    ("options", {"A": 1, "B": "no"}, "'options' must map letters to strings"),
    ("accepted_answers", [1, 2], "'accepted_answers' must be a list of strings"),
    ("id", {"x": 1}, "'benchmark' must be a string and 'id' a string or an integer"),
])
def test_wrong_types_are_errors_naming_the_line(tmp_path, capsys, field, value, message):
    code, out = _score(tmp_path, json.dumps(GOOD) + "\n" + json.dumps({**GOOD, field: value}) + "\n", capsys)
    assert code == 2 and f"p.jsonl line 2: {message}" in out.err and "Traceback" not in out.err


def test_every_bad_line_is_named_at_once_and_nothing_is_written(tmp_path, capsys):
    rows = [GOOD, {**GOOD, "answer": 1}, GOOD, {**GOOD, "question": None}]
    code, out = _score(tmp_path, "".join(json.dumps(r) + "\n" for r in rows), capsys)
    assert code == 2 and "line 2:" in out.err and "line 4:" in out.err
    assert not (tmp_path / "p.verdicts.jsonl").exists()


def test_non_utf8_bytes_name_the_line(tmp_path, capsys):
    code, out = _score(tmp_path, json.dumps(GOOD).encode() + b"\n" + b'{"prediction": "\xff"}\n', capsys)
    assert code == 2 and "p.jsonl:2: not UTF-8" in out.err


def test_a_torn_last_line_is_reported(tmp_path, capsys):
    code, out = _score(tmp_path, json.dumps(GOOD) + "\n" + '{"id": "2", "predic', capsys)
    assert code == 0 and "line 2 is torn" in out.err
    summary = json.loads((tmp_path / "p.summary.json").read_text())
    assert summary["custom"]["torn_last_line"] == 2 and summary["custom"]["n"] == 1


def test_an_item_twice_is_an_error_naming_both_lines(tmp_path, capsys):
    # Two runs appended to one file: the conflicting answer and the plain repeat would both count in n.
    other = {**GOOD, "id": "2"}
    conflicting = {**GOOD, "prediction": "<ANSWER>no</ANSWER>"}
    code, out = _score(tmp_path, "\n".join(json.dumps(r) for r in (GOOD, other, conflicting, other)) + "\n", capsys)
    assert code == 2 and "Traceback" not in out.err
    assert "p.jsonl line 3: item id '1' is already on line 1 (a different prediction)" in out.err
    assert "p.jsonl line 4: item id '2' is already on line 2 (the same prediction)" in out.err
    assert not (tmp_path / "p.verdicts.jsonl").exists()
