"""Each benchmark loader on generated files in its real layout; missing data, wrong sizes, bad rows."""

from __future__ import annotations

import json
import warnings

import pytest

from medsage.eval.benchmarks.base import BenchmarkDataError, MissingDataError, SplitSizeWarning, load_benchmark
from medsage.eval.prompting import PromptConfig, build_request
from medsage.registry import BENCHMARKS


def _load(name, path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SplitSizeWarning)
        return load_benchmark(name, path, **kw)


def test_all_benchmarks_are_entry_points():
    assert {"vqa_rad", "slake", "pathvqa", "pmc_vqa", "mmmu_med", "omnimedvqa"} <= set(BENCHMARKS.names())
    for name in BENCHMARKS.names():
        info = BENCHMARKS.get(name).info
        assert info.name == name and info.published_at and info.question_types


def test_vqa_rad_original_keeps_test_rows_and_answer_types(layouts, tmp_path):
    root = layouts.make_vqa_rad_original(tmp_path / "vqa_rad", n_test=4, n_train=2)
    samples = _load("vqa_rad", root)
    assert len(samples) == 4
    assert [s.question_type for s in samples] == ["closed", "open", "closed", "open"]  # "CLOSED " with a space
    assert samples[1].answer == "left lung" and samples[0].metadata["organ"] == "HEAD"
    assert all(p.endswith(".jpg") for s in samples for p in s.images)


def test_vqa_rad_parquet_closed_means_yes_no(layouts, tmp_path):
    root = layouts.make_vqa_rad_parquet(tmp_path / "vqa_rad", n=3)
    samples = _load("vqa_rad", root, image_cache=tmp_path / "cache")
    assert [s.question_type for s in samples] == ["closed", "closed", "open"]
    # embedded image bytes are written out once and reused
    assert all((tmp_path / "cache").joinpath(p.rsplit("/", 1)[-1]).exists() for s in samples for p in s.images)
    again = _load("vqa_rad", root, image_cache=tmp_path / "cache")
    assert [s.images for s in again] == [s.images for s in samples]


def test_slake_is_english_only_by_default(layouts, tmp_path):
    folder = layouts.make_slake(tmp_path, n_en=3, n_zh=2)
    assert len(_load("slake", folder)) == 3
    both = _load("slake", folder, languages=["en", "zh"])
    assert len(both) == 5 and {s.metadata["lang"] for s in both} == {"en", "zh"}
    assert _load("slake", folder)[1].modality == "CT"


def test_pathvqa_parquet_and_pickles(layouts, tmp_path):
    parquet = _load("pathvqa", layouts.make_pathvqa_parquet(tmp_path / "pq", n=3), image_cache=tmp_path / "c")
    assert [s.question_type for s in parquet] == ["closed", "closed", "open"]
    pickles = _load("pathvqa", layouts.make_pathvqa_pickles(tmp_path / "orig", n=3))
    assert [s.answer for s in pickles] == ["yes", "fibrosis", "yes"]
    assert pickles[0].images[0].endswith("test_0000.jpg")


def test_pmc_vqa_strips_option_prefixes_and_reads_every_answer_form(layouts, tmp_path):
    samples = _load("pmc_vqa", layouts.make_pmc_vqa(tmp_path / "PMC-VQA", n=4))
    assert samples[0].options == {"A": "CT", "B": "MRI", "C": "X-ray", "D": "Ultrasound"}
    assert [s.answer for s in samples] == ["A", "B", "C", "D"]  # "A:CT ", "B:MRI", "C", option text


def test_mmmu_med_options_string_placeholders_and_open_answers(layouts, tmp_path):
    samples = _load("mmmu_med", layouts.make_mmmu(tmp_path / "MMMU", per_subject=2), image_cache=tmp_path / "c")
    assert len(samples) == 10 and {s.metadata["subject"] for s in samples} >= {"Pharmacy", "Public_Health"}
    choice, open_ = samples[0], samples[1]
    assert choice.question_type == "choice" and choice.options["B"] == "The second image" and len(choice.images) == 2
    assert open_.question_type == "open" and open_.metadata["accepted_answers"] == ["2", "two"]
    # image N is placed where <image N> stands in the question
    req = build_request(choice, PromptConfig(template="{question}\n{options}{instruction}"))
    kinds = [(p.kind, p.value if p.kind == "image" else p.value[:8]) for p in req.parts]
    assert kinds[0] == ("text", "Compare ") and kinds[1] == ("image", choice.images[0])
    assert kinds[3] == ("image", choice.images[1]) and "<image" not in req.text


def test_omnimedvqa_maps_option_text_to_letter_and_keeps_modality(layouts, tmp_path):
    samples = _load("omnimedvqa", layouts.make_omnimedvqa(tmp_path))
    assert [s.answer for s in samples] == ["B", "B", "B"]
    assert samples[0].options == {"A": "Normal", "B": "Glaucoma"} and len(samples[2].options) == 4
    assert samples[1].metadata["modality"] == "X-Ray"


def test_a_corrupt_release_json_names_the_file_and_line(layouts, tmp_path):
    slake = layouts.make_slake(tmp_path / "s", n_en=2, n_zh=0)
    (slake / "test.json").write_text('[{"qid": 1,\n  "question": }]')
    with pytest.raises(BenchmarkDataError, match=r"test\.json: not valid JSON \(.*, line 2\)"):
        _load("slake", slake)
    omni = layouts.make_omnimedvqa(tmp_path / "o")
    (omni / "QA_information" / "Open-access" / "ACRIMA.json").write_text("[{")
    with pytest.raises(BenchmarkDataError, match=r"ACRIMA\.json: not valid JSON"):
        _load("omnimedvqa", omni)


@pytest.mark.parametrize("name", ["vqa_rad", "slake", "pathvqa", "pmc_vqa", "mmmu_med", "omnimedvqa"])
def test_missing_data_says_where_it_looked_and_where_data_is_published(tmp_path, name):
    empty = tmp_path / "empty"
    empty.mkdir()
    for path in (tmp_path / "nowhere", empty):
        with pytest.raises(MissingDataError) as err:
            load_benchmark(name, path)
        msg = str(err.value)
        assert str(path) in msg and "published at" in msg and BENCHMARKS.get(name).info.published_at in msg


def test_unset_path_is_a_clear_error():
    with pytest.raises(MissingDataError, match="no path was given"):
        load_benchmark("slake", "???")


def test_wrong_split_size_warns_with_both_numbers(layouts, tmp_path):
    root = layouts.make_vqa_rad_original(tmp_path / "vqa_rad", n_test=4)
    with pytest.warns(SplitSizeWarning, match=r"has 4 items; the published split has 451"):
        load_benchmark("vqa_rad", root)
    with pytest.warns(SplitSizeWarning, match=r"has 10 items; the published split has 150"):
        load_benchmark("mmmu_med", layouts.make_mmmu(tmp_path / "MMMU"), image_cache=tmp_path / "c")


def test_bad_rows_name_file_row_and_reason(layouts, tmp_path):
    root = layouts.make_vqa_rad_original(tmp_path / "vqa_rad", n_test=2, n_train=0)
    path = root / "VQA_RAD Dataset Public.json"
    rows = json.loads(path.read_text())
    rows[1]["answer_type"] = "MAYBE"
    path.write_text(json.dumps(rows))
    with pytest.raises(BenchmarkDataError, match=r"VQA_RAD Dataset Public.json row 1: answer_type 'MAYBE'"):
        _load("vqa_rad", root)
    rows[1]["answer_type"] = "OPEN"
    rows[1]["image_name"] = "missing.jpg"
    path.write_text(json.dumps(rows))
    with pytest.raises(BenchmarkDataError, match=r"row 1: image 'missing.jpg' not found"):
        _load("vqa_rad", root)


def test_pmc_answer_that_names_no_option_is_reported(layouts, tmp_path):
    root = layouts.make_pmc_vqa(tmp_path / "PMC-VQA", n=2)
    text = (root / "test_2.csv").read_text().replace("B:MRI,test", "Sonography,test")
    (root / "test_2.csv").write_text(text)
    with pytest.raises(BenchmarkDataError, match=r"test_2.csv row 3: answer 'Sonography'"):
        _load("pmc_vqa", root)
