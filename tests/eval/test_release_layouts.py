"""Benchmarks in the layouts their publishers ship: split rules, answer types, repeats."""

from __future__ import annotations

import json
import warnings

import pytest

from medsage.eval.benchmarks.base import SplitSizeWarning, UnknownSplitError, load_benchmark
from medsage.registry import BENCHMARKS


def _bench(name, path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SplitSizeWarning)
        bench = BENCHMARKS.get(name)(path, **kw)
        return bench, bench.load()


@pytest.mark.parametrize("split", ["validation", "tset", "all"])
def test_vqa_rad_unknown_split_lists_the_splits_found(layouts, tmp_path, split):
    root = layouts.make_vqa_rad_original(tmp_path / "vqa_rad", n_test=2, n_train=2)
    with pytest.raises(UnknownSplitError, match=rf"no split '{split}'; the splits found are: test, train"):
        load_benchmark("vqa_rad", root, split=split)
    pq = layouts.make_vqa_rad_parquet(tmp_path / "pq", n=2)
    with pytest.raises(UnknownSplitError, match=r"the splits found are: test, train"):
        load_benchmark("vqa_rad", pq, split=split, image_cache=tmp_path / "c")


def test_vqa_rad_original_train_never_holds_test_rows(layouts, tmp_path):
    root = layouts.make_vqa_rad_original(tmp_path / "vqa_rad", n_test=3, n_train=2)
    _, test = _bench("vqa_rad", root)
    _, train = _bench("vqa_rad", root, split="train")
    assert len(test) == 3 and len(train) == 2 and not {s.id for s in test} & {s.id for s in train}


def test_vqa_rad_mevf_layout_splits_by_file_and_keeps_test_out_of_train(layouts, tmp_path):
    root = layouts.make_vqa_rad_mevf(tmp_path / "mevf", n_test=3, n_train=4, leak=True)
    bench, test = _bench("vqa_rad", root)
    assert bench.layout == "mevf" and len(test) == 3 and bench.files_read[0].endswith("data_RAD/testset.json")
    assert [s.question_type for s in test] == ["closed", "open", "closed"]
    assert all("/data_RAD/images/" in s.images[0] for s in test)
    bench, train = _bench("vqa_rad", root, split="train")
    assert len(train) == 4 and bench.stats == {"rows": 5, "test_items_left_out": 1}
    assert not {s.id for s in test} & {s.id for s in train}
    # The folder itself, or testset.json named directly, reads the same split.
    assert len(_bench("vqa_rad", root / "data_RAD")[1]) == 3
    assert len(_bench("vqa_rad", root / "data_RAD" / "testset.json")[1]) == 3
    with pytest.raises(UnknownSplitError, match="splits found are: test, train"):
        load_benchmark("vqa_rad", root, split="val")


def test_vqa_rad_mevf_published_sizes_per_layout(layouts, tmp_path):
    root = layouts.make_vqa_rad_mevf(tmp_path / "mevf", n_test=2, n_train=2, leak=False)
    with pytest.warns(SplitSizeWarning, match=r"has 2 items; the published split has 3064"):
        load_benchmark("vqa_rad", root, split="train")
    with pytest.warns(SplitSizeWarning, match=r"has 2 items; the published split has 451"):
        load_benchmark("vqa_rad", root)


def test_vqa_rad_parquet_uses_the_release_answer_type_where_present(layouts, tmp_path):
    plain = layouts.make_vqa_rad_parquet(tmp_path / "a", n=3)
    _, samples = _bench("vqa_rad", plain, image_cache=tmp_path / "c")
    assert [s.question_type for s in samples] == ["closed", "closed", "open"]  # yes/no rule
    assert {s.metadata["type_rule"] for s in samples} == {"yes/no reference"}
    typed = layouts.make_vqa_rad_parquet(tmp_path / "b", n=3, answer_type=True)
    bench, samples = _bench("vqa_rad", typed, image_cache=tmp_path / "c")
    assert [s.question_type for s in samples] == ["closed", "closed", "closed"]  # "right kidney" is CLOSED
    assert {s.metadata["type_rule"] for s in samples} == {"release answer_type"} and bench.layout == "parquet"


def test_slake_reads_the_hugging_face_validation_json(layouts, tmp_path):
    for name in ("validate.json", "validation.json"):
        folder = layouts.make_slake(tmp_path / name, n_en=2, n_zh=1, split_file=name)
        bench, samples = _bench("slake", folder, split="validation")
        assert len(samples) == 2 and bench.files_read[0].endswith(name)
    with pytest.raises(UnknownSplitError, match=r"no split 'test'; the splits found are: validation"):
        load_benchmark("slake", folder, split="test")


def test_pathvqa_reads_rows_as_published_and_drops_repeats_only_when_asked(layouts, tmp_path):
    root = layouts.make_pathvqa_pickles(tmp_path / "p", n=4, repeats=2)
    as_published = BENCHMARKS.get("pathvqa")(root)  # the release's rows, checked against the release's 6,761
    with pytest.warns(SplitSizeWarning, match=r"has 6 items; the published split has 6761"):
        assert len(as_published.load()) == 6
    assert as_published.stats["rule"] == "rows as published (pickle)"
    with warnings.catch_warnings():
        warnings.simplefilter("error", SplitSizeWarning)  # medsage's rule: a count nobody publishes, so no check
        bench = BENCHMARKS.get("pathvqa")(root, dedup=True)
        samples = bench.load()
    assert (bench.stats["rows"], bench.stats["unique"], len(samples)) == (6, 4, 4)
    assert bench.stats["rule"].startswith("repeats dropped by medsage's rule")
    assert [s.id for s in samples] == [f"pathvqa-test-{i}" for i in range(4)]
    with pytest.raises(UnknownSplitError, match="splits found are: test"):
        load_benchmark("pathvqa", root, split="val")


def test_pathvqa_parquet_copy_is_checked_against_its_own_count_and_repeats_go_by_image_bytes(layouts, tmp_path):
    root = layouts.make_pathvqa_parquet(tmp_path / "pq", n=3)
    import pyarrow.parquet as pq

    path = next((root / "data").glob("test-*.parquet"))
    rows = pq.read_table(path).to_pylist()
    layouts.write_parquet(path, rows + [dict(rows[0])])
    with pytest.warns(SplitSizeWarning, match=r"has 4 items; the published split has 6719"):
        assert len(BENCHMARKS.get("pathvqa")(root, image_cache=tmp_path / "c").load()) == 4
    bench, samples = _bench("pathvqa", root, image_cache=tmp_path / "c", dedup=True)
    assert (bench.stats["rows"], bench.stats["unique"], len(samples)) == (4, 3, 3)


def test_bad_mevf_row_names_file_row_and_reason(layouts, tmp_path):
    root = layouts.make_vqa_rad_mevf(tmp_path / "m", n_test=2, n_train=1, leak=False)
    path = root / "data_RAD" / "testset.json"
    rows = json.loads(path.read_text())
    del rows[1]["question"]
    path.write_text(json.dumps(rows))
    with pytest.raises(Exception, match=r"testset.json row 1: missing field 'question'"):
        load_benchmark("vqa_rad", root)


def test_pmc_vqa_reads_both_test_files_and_says_which(layouts, tmp_path):
    root = layouts.make_pmc_vqa(tmp_path / "PMC-VQA", n=4)
    layouts.make_pmc_vqa_clean(root, n=3)
    bench, test = _bench("pmc_vqa", root)
    assert bench.files_read[0].endswith("test_2.csv") and len(test) == 4
    bench, clean = _bench("pmc_vqa", root, split="test_clean")
    assert bench.files_read[0].endswith("test_clean.csv") and bench.layout == "test_clean.csv"
    assert [s.answer for s in clean] == ["B", "C", "D"]  # Answer_label; Answer holds the option text
    assert clean[0].options == {"A": "Diffuse uptake", "B": "Focal uptake", "C": "No uptake", "D": "Cannot determine"}
    with pytest.raises(UnknownSplitError, match=r"splits found are: test, test_clean"):
        load_benchmark("pmc_vqa", root, split="train")


def test_mmmu_medical_validation_is_30_per_subject(layouts, tmp_path):
    root = layouts.make_mmmu(tmp_path / "MMMU", per_subject=30)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SplitSizeWarning)
        bench = BENCHMARKS.get("mmmu_med")(root, split="validation", image_cache=tmp_path / "c")
        samples = bench.load()
    assert len(samples) == 150 and len(bench.files_read) == 5
    assert sum("<image 1>" in s.question for s in samples) == 150
    with pytest.raises(UnknownSplitError, match=r"splits found are: validation"):
        load_benchmark("mmmu_med", root, split="dev")


def test_omnimedvqa_access_levels(layouts, tmp_path):
    root = layouts.make_omnimedvqa(tmp_path, restricted=True)
    assert len(_bench("omnimedvqa", root)[1]) == 3
    bench = BENCHMARKS.get("omnimedvqa")(root, split="all", strict=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SplitSizeWarning)
        both = bench.load()
    assert len(both) == 4 and both[-1].modality == "CT(Computed Tomography)"  # read from `modality`
    assert len(bench.missing_images) == 1 and "Chest CT Scan.json row 0" in bench.missing_images[0]
    with pytest.raises(Exception, match=r"image 'Images/Chest CT Scan/a.png' not found"):
        load_benchmark("omnimedvqa", root, split="restricted-access")
    with pytest.raises(UnknownSplitError, match=r"open-access, restricted-access"):
        load_benchmark("omnimedvqa", root, split="test")


def test_a_release_row_that_is_not_an_object_is_named(layouts, tmp_path):
    root = layouts.make_vqa_rad_original(tmp_path / "vqa_rad", n_test=2, n_train=0)
    path = root / "VQA_RAD Dataset Public.json"
    path.write_text(json.dumps([*json.loads(path.read_text()), "stray"]))
    with pytest.raises(Exception, match=r"VQA_RAD Dataset Public.json row 2: expected a JSON object, got str"):
        load_benchmark("vqa_rad", root)
