"""The leak check sees eval images stored inside parquet (MMMU, HF copies) and warns on an empty eval root."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from medsage.data_pipeline.dedup import DedupConfig, dedup_folders
from medsage.data_pipeline.eval_images import NoEvalImagesWarning, collect_eval_images
from medsage.launch.demo import benchmarks as demo


def _png(array) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def test_parquet_only_eval_images_are_hashed_and_catch_a_leak(tmp_path, picture):
    mmmu = tmp_path / "eval" / "MMMU" / "Clinical_Medicine"
    leaked, other = picture(7, 160), picture(8, 160)
    demo.write_parquet(mmmu / "validation-00000-of-00001.parquet", [
        {"id": "v1", "image_1": {"bytes": _png(leaked), "path": "a.png"}, "image_2": None},
        {"id": "v2", "image_1": {"bytes": _png(other), "path": "b.png"}, "image_2": {"bytes": _png(other), "path": "b"}},
    ])
    train = tmp_path / "train"
    train.mkdir()
    Image.fromarray(leaked).resize((120, 120)).save(train / "copy.png")
    Image.fromarray(picture(99, 160)).save(train / "distinct.png")
    images = collect_eval_images([tmp_path / "eval"], tmp_path / "cache")
    assert len(images) == 2  # the repeated image is written and hashed once
    summary = dedup_folders([train], [tmp_path / "eval"], tmp_path / "out", DedupConfig(within_train=False, workers=1))
    assert summary["eval_images"] == 2 and summary["removed_by_reason"] == {"eval-leak": 1}
    removed = [json.loads(line) for line in (tmp_path / "out" / "removed.jsonl").read_text().splitlines()]
    assert removed[0]["image"].endswith("copy.png") and removed[0]["distance"] <= 10


def test_an_eval_root_without_any_image_warns(tmp_path):
    empty = tmp_path / "Slake1.0"
    empty.mkdir()
    (empty / "test.json").write_text("[]")
    with pytest.warns(NoEvalImagesWarning, match=r"Slake1.0 yields no image"):
        assert collect_eval_images([empty], tmp_path / "cache") == []
