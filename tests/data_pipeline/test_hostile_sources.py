"""Hostile and careless source data: every bad input becomes a rejection naming its
file, row or line and the reason, or a whole unreadable file an error naming it; nothing is read outside a
source root nor written outside out_dir."""

from __future__ import annotations

import csv
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medsage.data_pipeline.run import RunConfig, run


def ingest(kind: str, root: Path, out: Path, **quality) -> tuple[dict, list[dict], list[dict]]:
    """One source through the real run (no dedup): (its summary entry, kept records, rejections)."""
    cfg = RunConfig.from_dict({"out_dir": str(out), "sources": [{"name": kind, "root": str(root)}],
                               "shard_size": 3, "quality": quality, "dedup": {"within_train": False},
                               "write": {"verl": False, "easyr1": False}})
    summary = run(cfg)
    entry = next(iter(summary["sources"].values()))
    kept = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    assert entry["kept"] + entry["rejected"] == entry["inputs"]
    return entry, kept, rejected


def bomb_png(path: Path, side: int = 20000) -> Path:
    """A few-hundred-byte PNG whose header claims ``side`` x ``side`` pixels (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def _rewrite_csv(root: Path, edit) -> None:
    path = root / "DL_info.csv"
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    header = list(rows[0])
    rows = edit(rows)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, header)
        writer.writeheader()
        writer.writerows(rows)


def _outside(tmp_path: Path, picture) -> Path:
    secret = tmp_path / "outside" / "secret.png"
    secret.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture(7, 128)).save(secret)
    return secret


def _files_outside(tmp_path: Path, before: set[Path], out: Path) -> list[Path]:
    return [p for p in tmp_path.rglob("*") if p.is_file() and p not in before and not p.is_relative_to(out)]


# --------------------------------------------------------------------------------------------
# 1. Path traversal
# --------------------------------------------------------------------------------------------


def test_deeplesion_file_name_cannot_read_or_write_outside(tmp_path, deeplesion_root, picture):
    src = np.full((128, 128), 32768 + 40, dtype=np.uint16)
    src[::3] += 200
    (tmp_path / "Images_png").mkdir()
    escaped = tmp_path / "Images_png" / "000001_01_01"
    escaped.mkdir()
    Image.fromarray(src).save(escaped / "555.png")

    def edit(rows):
        rows[0]["File_name"] = "../../000001_01_01_555.png"
        rows[1]["File_name"] = "/etc/000001_01_01_555.png"
        return rows

    _rewrite_csv(deeplesion_root, edit)
    before = {p for p in tmp_path.rglob("*") if p.is_file()}
    out = tmp_path / "out"
    entry, kept, rejected = ingest("deeplesion", deeplesion_root, out)
    bad = {r["key"]: r for r in rejected if r["key"] in ("row000002", "row000003")}
    assert {r["reason"] for r in bad.values()} == {"bad-annotation"}
    assert all("DL_info.csv line" in r["detail"] and "File_name" in r["detail"] for r in bad.values())
    assert not _files_outside(tmp_path, before, out)
    assert all(p.startswith(str(out)) for r in kept for p in r["images"])


def test_deeplesion_symlinked_slice_outside_the_root_is_rejected(tmp_path, deeplesion_root, picture):
    target = tmp_path / "elsewhere.png"
    Image.fromarray(np.full((128, 128), 33000, dtype=np.uint16)).save(target)
    first = sorted((deeplesion_root / "Images_png").rglob("*.png"))[0]
    first.unlink()
    first.symlink_to(target)
    entry, kept, rejected = ingest("deeplesion", deeplesion_root, tmp_path / "out")
    hit = [r for r in rejected if r["reason"] == "path-outside-root"]
    assert len(hit) == 1 and str(target) in hit[0]["detail"] and "DL_info.csv line 2" in hit[0]["detail"]


def test_coco_file_names_outside_the_root_are_rejected(tmp_path, coco_root, picture):
    secret = _outside(tmp_path, picture)
    path = coco_root / "train" / "_annotations.coco.json"
    coco = json.loads(path.read_text())
    coco["images"][0]["file_name"] = "../../outside/secret.png"
    coco["images"][1]["file_name"] = str(secret)
    path.write_text(json.dumps(coco))
    entry, kept, rejected = ingest("roboflow_coco", coco_root, tmp_path / "out")
    outside = [r for r in rejected if r["reason"] == "path-outside-root"]
    assert len(outside) == 2 and all("_annotations.coco.json" in r["detail"] for r in outside)
    assert not any(str(secret) in p for r in kept for p in r["images"])


def test_yolo_paths_outside_the_root_are_refused(tmp_path, yolo_root, picture):
    secret = _outside(tmp_path, picture)
    link = yolo_root / "train" / "images" / "xray_train_0.png"
    link.unlink()
    link.symlink_to(secret)
    entry, kept, rejected = ingest("roboflow_yolo", yolo_root, tmp_path / "out")
    assert [r["key"] for r in rejected if r["reason"] == "path-outside-root"] == ["train/xray_train_0.png"]
    (yolo_root / "data.yaml").write_text(f"train: {secret.parent}\nnames: ['a']\n")
    with pytest.raises(ValueError, match="outside the source root"):
        ingest("roboflow_yolo", yolo_root, tmp_path / "out2")


def test_pubmedvision_image_paths_outside_the_root_are_rejected(tmp_path, pubmedvision_root, picture):
    secret = _outside(tmp_path, picture)
    path = pubmedvision_root / "PubMedVision_Alignment_VQA.json"
    items = json.loads(path.read_text())
    items[0]["image"] = ["../outside/secret.png"]
    items[1]["image"] = [str(secret)]
    path.write_text(json.dumps(items))
    entry, kept, rejected = ingest("pubmedvision", pubmedvision_root, tmp_path / "out")
    outside = [r for r in rejected if r["reason"] == "path-outside-root"]
    assert len(outside) == 2 and all("item" in r["detail"] and "outside the source root" in r["detail"]
                                      for r in outside)


def test_a_source_name_that_is_a_path_is_refused(tmp_path, coco_root):
    cfg = RunConfig.from_dict({"out_dir": str(tmp_path / "out"), "sources": [
        {"name": "roboflow_coco", "root": str(coco_root), "options": {"name": "../../escape"}}]})
    with pytest.raises(ValueError, match="plain name"):
        run(cfg)
    assert not (tmp_path / "escape").exists()


# --------------------------------------------------------------------------------------------
# 3. Decompression bombs
# --------------------------------------------------------------------------------------------


def test_a_decompression_bomb_is_rejected_and_the_run_goes_on(tmp_path, coco_root):
    name = json.loads((coco_root / "train" / "_annotations.coco.json").read_text())["images"][0]["file_name"]
    bomb_png(coco_root / "train" / name)
    entry, kept, rejected = ingest("roboflow_coco", coco_root, tmp_path / "out")
    (hit,) = [r for r in rejected if r["reason"] == "too-large"]
    assert name in hit["detail"] and "400000000 pixels" in hit["detail"] and entry["kept"] > 0


def test_the_pixel_limit_is_configurable(tmp_path, yolo_root, deeplesion_root):
    entry, kept, rejected = ingest("roboflow_yolo", yolo_root, tmp_path / "out", max_pixels=5000)
    assert not kept and entry["rejected_by_reason"].get("too-large", 0) >= 4
    entry, kept, rejected = ingest("deeplesion", deeplesion_root, tmp_path / "out2", max_pixels=5000)
    assert not kept and "too-large" in entry["rejected_by_reason"]


def test_dedup_names_a_bomb_and_goes_on(tmp_path, picture, capfd):
    from medsage.data_pipeline.cli import main

    train, evals = tmp_path / "train", tmp_path / "eval"
    train.mkdir(), evals.mkdir()
    Image.fromarray(picture(1)).save(train / "a.png")
    bomb_png(train / "bomb.png")
    Image.fromarray(picture(2)).save(evals / "e.png")
    assert main(["dedup", "--train", str(train), "--eval", str(evals), "--out", str(tmp_path / "d"),
                 "--workers", "1"]) == 0
    assert "bomb.png" in capfd.readouterr().err
    removed = [json.loads(x) for x in (tmp_path / "d" / "removed.jsonl").read_text().splitlines()]
    assert [Path(r["image"]).name for r in removed] == ["bomb.png"]


# --------------------------------------------------------------------------------------------
# 4-5. Non-finite numbers, bad rows, bad bytes
# --------------------------------------------------------------------------------------------


def test_nan_and_inf_boxes_are_rejected_in_every_box_format(tmp_path, deeplesion_root, coco_root, yolo_root):
    def edit(rows):
        rows[0]["Bounding_boxes"] = "nan, nan, nan, nan"
        rows[1]["Bounding_boxes"] = "1, 2, inf, 40"
        return rows

    _rewrite_csv(deeplesion_root, edit)
    entry, kept, rejected = ingest("deeplesion", deeplesion_root, tmp_path / "o1")
    bad = [r for r in rejected if r["key"] in ("row000002", "row000003")]
    assert [r["reason"] for r in bad] == ["bad-annotation"] * 2 and all("finite" in r["detail"] for r in bad)

    path = coco_root / "train" / "_annotations.coco.json"
    path.write_text(path.read_text().replace('"bbox": [10, 20, 20, 16]', '"bbox": [NaN, 20, 20, 16]'))
    entry, kept, rejected = ingest("roboflow_coco", coco_root, tmp_path / "o2")
    assert any(r["reason"] == "bad-annotation" and "finite" in r["detail"] for r in rejected)

    (yolo_root / "train" / "labels" / "xray_train_0.txt").write_text("0 nan 0.5 0.2 0.2\n")
    entry, kept, rejected = ingest("roboflow_yolo", yolo_root, tmp_path / "o3")
    (hit,) = [r for r in rejected if r["key"] == "train/xray_train_0.png"]
    assert hit["reason"] == "bad-annotation" and "xray_train_0.txt:1" in hit["detail"]


def test_deeplesion_short_rows_inf_integers_and_bad_bytes_are_rows_rejected(tmp_path, deeplesion_root):
    def edit(rows):
        rows[1]["Coarse_lesion_type"] = "inf"
        return rows

    _rewrite_csv(deeplesion_root, edit)
    path = deeplesion_root / "DL_info.csv"
    lines = path.read_bytes().split(b"\r\n")
    lines[1] = lines[1].split(b',"95, 105"')[0]  # a short row
    assert b",F," in lines[3]
    lines[3] = lines[3].replace(b",F,", b",\xff\xfe,", 1)  # bytes that are not UTF-8
    path.write_bytes(b"\r\n".join(lines))
    entry, kept, rejected = ingest("deeplesion", deeplesion_root, tmp_path / "out")
    by_key = {r["key"]: r for r in rejected}
    assert by_key["row000002"]["reason"] == "bad-row" and "line 2" in by_key["row000002"]["detail"]
    assert by_key["row000003"]["reason"] == "bad-annotation" and "Coarse_lesion_type" in by_key["row000003"]["detail"]
    assert by_key["row000004"]["reason"] == "bad-encoding" and "line 4" in by_key["row000004"]["detail"]
    assert entry["inputs"] == 15


def test_coco_entry_without_file_name_and_bad_bytes(tmp_path, coco_root):
    path = coco_root / "train" / "_annotations.coco.json"
    coco = json.loads(path.read_text())
    del coco["images"][0]["file_name"]
    coco["images"][1]["file_name"] = 42
    path.write_text(json.dumps(coco))
    entry, kept, rejected = ingest("roboflow_coco", coco_root, tmp_path / "out")
    bad = [r for r in rejected if "needs a string file_name" in r["detail"]]
    assert len(bad) == 2 and all("images[" in r["detail"] and "_annotations.coco.json" in r["detail"] for r in bad)
    assert entry["inputs"] == 8
    path.write_bytes(path.read_bytes().replace(b'"info"', b'"\xff\xfe"', 1))
    with pytest.raises(ValueError, match=r"_annotations.coco.json: not UTF-8"):
        ingest("roboflow_coco", coco_root, tmp_path / "out2")


def test_yolo_label_file_with_bad_bytes_names_file_and_line(tmp_path, yolo_root):
    (yolo_root / "train" / "labels" / "xray_train_1.txt").write_bytes(b"0 0.5 0.5 0.2 0.2\n1 0.4 \xff 0.1 0.1\n")
    entry, kept, rejected = ingest("roboflow_yolo", yolo_root, tmp_path / "out")
    (hit,) = [r for r in rejected if r["key"] == "train/xray_train_1.png"]
    assert hit["reason"] == "bad-encoding" and "xray_train_1.txt:2" in hit["detail"]


def test_pubmedvision_bad_bytes_is_an_error_naming_the_file(tmp_path, pubmedvision_root):
    path = pubmedvision_root / "PubMedVision_Alignment_VQA.json"
    path.write_bytes(path.read_bytes().replace(b"chest CT", b"chest \xff CT"))
    with pytest.raises(ValueError, match=r"PubMedVision_Alignment_VQA.json: not UTF-8"):
        ingest("pubmedvision", pubmedvision_root, tmp_path / "out")


@pytest.mark.parametrize("field,value", [("question", 5), ("answer", None), ("question", ["a"]), ("id", 3)])
def test_a_record_with_a_non_string_field_names_file_and_line(tmp_path, demo_samples, field, value):
    from medsage.records import RecordError, read_records, write_records

    path = write_records(tmp_path / "r.jsonl", demo_samples[:2])
    lines = path.read_text().splitlines()
    row = json.loads(lines[1])
    row[field] = value
    path.write_text(lines[0] + "\n" + json.dumps(row) + "\n")
    with pytest.raises(RecordError, match=rf"r.jsonl:2: {field} must be a string"):
        list(read_records(path))


def test_records_with_nan_boxes_or_bad_bytes_name_the_line(tmp_path, demo_samples):
    from medsage.records import RecordError, read_records, write_records

    path = write_records(tmp_path / "r.jsonl", demo_samples[:1])
    row = json.loads(path.read_text())
    row["rois"] = [{"kind": "box", "box": [float("nan"), 1, 2, 3]}]
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(RecordError, match=r"r.jsonl:1: .*finite"):
        list(read_records(path))
    path.write_bytes(b'{"id": "\xff"}\n')
    with pytest.raises(RecordError, match=r"r.jsonl:1: not UTF-8"):
        list(read_records(path))


# --------------------------------------------------------------------------------------------
# 6. COCO duplicate entries
# --------------------------------------------------------------------------------------------


def test_coco_duplicate_file_names_are_counted_merged_and_said(tmp_path, coco_root):
    path = coco_root / "train" / "_annotations.coco.json"
    coco = json.loads(path.read_text())
    first = coco["images"][0]
    coco["images"].append({**first, "id": 100})  # same picture, its own id and box: merged
    coco["annotations"].append({"id": 900, "image_id": 100, "category_id": 2, "bbox": [50, 50, 10, 10]})
    coco["images"].append({**first, "id": 101, "width": 512})  # disagrees on size: not merged
    coco["annotations"].append({"id": 901, "image_id": 101, "category_id": 3, "bbox": [5, 5, 10, 10]})
    path.write_text(json.dumps(coco))
    entry, kept, rejected = ingest("roboflow_coco", coco_root, tmp_path / "out")
    assert entry["inputs"] == 10  # 4 + 4 entries + 2 duplicates: every entry counted
    dup = {r["reason"]: r for r in rejected if "duplicate" in r["reason"]}
    assert set(dup) == {"duplicate-entry", "conflicting-duplicate"}
    assert "merged there" in dup["duplicate-entry"]["detail"] and "images[0]" in dup["duplicate-entry"]["detail"]
    (record,) = [r for r in kept if r["metadata"]["file_name"] == first["file_name"]]
    labels = {roi["label"] for roi in record["rois"] if roi["origin"] == "annotation"}
    assert labels == {"glioma", "meningioma"}  # its own box and the merged one, not the conflicting one


# --------------------------------------------------------------------------------------------
# 7. 16-bit images outside DeepLesion
# --------------------------------------------------------------------------------------------


def test_sixteen_bit_images_are_rescaled_by_their_own_range(tmp_path, yolo_root, picture):
    for png in (yolo_root / "train" / "images").glob("*.png"):
        twelve_bit = (np.asarray(Image.open(png).convert("L"), dtype=np.uint16) * 16)  # 0..4080
        Image.fromarray(twelve_bit).save(png)  # mode I;16: convert("L") clips all of it to white
    assert Image.open(png).mode.startswith("I")
    entry, kept, rejected = ingest("roboflow_yolo", yolo_root, tmp_path / "out")
    assert "near-constant" not in entry["rejected_by_reason"]
    train = [r for r in kept if r["metadata"]["split"] == "train"]
    assert len(train) == 3
    for r in train:
        copy = Path(r["images"][0])
        assert copy.is_relative_to(tmp_path / "out") and Image.open(copy).mode == "L"
        assert np.asarray(Image.open(copy)).std() > 10
