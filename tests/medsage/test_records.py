"""Sample records: JSON round-trip, schema errors, and file:line reporting."""

from __future__ import annotations

import json

import pytest

from medsage.records import RecordError, RoI, Sample, read_records, write_records
from medsage.scaffold import Trajectory


def make(**kw) -> Sample:
    base = dict(id="s1", source="demo", images=["a.png"], question="Which organ?", answer="B",
                question_type="choice", options={"A": "Lung", "B": "Liver"}, modality="CT",
                rois=[RoI("box", box=(1, 2, 30, 40), label="liver"), RoI("text", text="right upper abdomen"),
                      RoI("global")],
                trajectory=Trajectory("l", "v", "k", "c", "B. Liver"))
    return Sample(**(base | kw))


def test_json_round_trip(tmp_path):
    s = make()
    assert Sample.from_json(s.to_json()) == s
    path = write_records(tmp_path / "r.jsonl", [s, make(id="s2", rejection="too small")])
    back = list(read_records(path))
    assert back[0] == s and not back[1].kept and back[1].rejection == "too small"
    assert "Options:\nA. Lung\nB. Liver" in s.prompt_text()


@pytest.mark.parametrize(
    "change, reason",
    [
        (dict(question_type="maybe"), "question_type must be one of"),
        (dict(answer="C"), "not one of the option letters"),
        (dict(options=None), "needs options"),
        (dict(id=" "), "id is empty"),
    ],
)
def test_schema_errors(change, reason):
    with pytest.raises(RecordError, match=reason):
        make(**change)


def test_roi_errors():
    with pytest.raises(RecordError, match="degenerate"):
        RoI("box", box=(10, 10, 10, 20))
    with pytest.raises(RecordError, match="4 pixel coordinates"):
        RoI("box", box=(1, 2, 3))
    with pytest.raises(RecordError, match="non-empty text"):
        RoI("text", text=" ")


def test_bad_line_names_file_and_line(tmp_path):
    good = make().to_json()
    bad_field = json.dumps(json.loads(good) | {"colour": "red"})
    path = tmp_path / "records.jsonl"
    path.write_text(good + "\n\n" + good.replace('"s1"', '"s2"') + "\n" + bad_field + "\n")
    it = read_records(path)
    assert next(it).id == "s1" and next(it).id == "s2"
    with pytest.raises(RecordError) as err:
        next(it)
    assert str(err.value).startswith(f"{path}:4: ") and "colour" in str(err.value)

    path.write_text(good + "\n{not json\n")
    with pytest.raises(RecordError, match=r"records.jsonl:2: not valid JSON"):
        list(read_records(path))
    path.write_text('{"id": "x"}\n')
    with pytest.raises(RecordError, match=r":1: missing field"):
        list(read_records(path))


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    from medsage import io

    target = tmp_path / "out.json"
    io.atomic_write_text(target, "old")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(io.os, "replace", boom)
    with pytest.raises(OSError):
        io.atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temp file left behind
