"""SAGE-rl balanced sampling: proportions by question type x modality, one question per record, the RL
writers' files, and the CLI."""

from __future__ import annotations

import copy
import json
import random
from collections import Counter

import pytest

from medsage.data_pipeline.synthesis.cli import main
from medsage.data_pipeline.rl_sample import allocate, balanced_sample, one_per_record
from medsage.records import Sample, read_records, write_records
from medsage.scaffold import Trajectory

TRAJ = Trajectory(loc="The region lies in the upper abdomen.", vis="A bright round focus.",
                  know="- Dense focal areas indicate lesions.", con="The focus supports the answer.", answer="Yes")


def _pool(sizes: dict[tuple[str, str], int], per_record: int = 2, image_dir=None, side: int = 224) -> list[Sample]:
    """``per_record`` RPA trajectories for each of ``n`` records per (question type, modality); with
    ``image_dir``, each record's image is written there (``side`` x ``side`` pixels)."""
    from PIL import Image

    pool = []
    for (qtype, modality), n in sizes.items():
        for i in range(n):
            rid = f"{qtype}-{modality}-{i}"
            image = f"/img/{rid}.png"
            if image_dir is not None:
                image = str(image_dir / f"{rid}.png")
                Image.new("RGB", (side, side), (90, 90, 90)).save(image)
            answer, options = {"closed": ("yes", None), "choice": ("A", {"A": "Lung", "B": "Liver"}),
                               "open": ("liver", None)}[qtype]
            for j in range(per_record):
                pool.append(Sample(id=f"{rid}#r{j}-morphology", source="t", images=[image],
                                   question="Q?", answer=answer, question_type=qtype, options=options,
                                   modality=modality, trajectory=copy.deepcopy(TRAJ),
                                   metadata={"synth": {"record_id": rid, "roi_index": j}}))
    return pool


def test_allocate_is_water_filling():
    rng = random.Random(0)
    assert allocate({("a",): 100, ("b",): 100, ("c",): 100}, 90, rng) == {("a",): 30, ("b",): 30, ("c",): 30}
    # A small stratum gives all it has; its unused share goes to the others.
    alloc = allocate({("a",): 5, ("b",): 100, ("c",): 100}, 90, rng)
    assert alloc[("a",)] == 5 and alloc[("b",)] + alloc[("c",)] == 85 and abs(alloc[("b",)] - alloc[("c",)]) <= 1
    assert sum(allocate({("a",): 7, ("b",): 3}, 100, rng).values()) == 10  # pool smaller than target


def test_balanced_proportions_from_an_imbalanced_pool():
    sizes = {("closed", "CT"): 400, ("choice", "CT"): 60, ("open", "CT"): 300,
             ("closed", "MRI"): 250, ("open", "X-ray"): 20}
    pool = _pool(sizes)
    chosen, summary = balanced_sample(pool, target=500, seed=1)
    assert len(chosen) == 500 and summary["shortfall"] == 0
    counts = Counter((s.question_type, s.modality) for s in chosen)
    # Strata with fewer questions than the even share give all; the rest split the remainder evenly.
    assert counts[("open", "X-ray")] == 20 and counts[("choice", "CT")] == 60
    big = [counts[k] for k in [("closed", "CT"), ("open", "CT"), ("closed", "MRI")]]
    assert max(big) - min(big) <= 1 and sum(big) == 420
    assert len({(s.metadata["synth"]["record_id"]) for s in chosen}) == 500  # never the same question twice
    assert summary["pool_questions"] == sum(sizes.values())
    again, _ = balanced_sample(pool, target=500, seed=1)
    assert [s.id for s in again] == [s.id for s in chosen]  # seeded


def test_shortfall_and_bad_pool():
    pool = _pool({("closed", "CT"): 3})
    chosen, summary = balanced_sample(pool, target=10)
    assert len(chosen) == 3 and summary["shortfall"] == 7
    assert len(one_per_record(pool)) == 3
    pool[0].trajectory = None
    with pytest.raises(ValueError, match="trajectories"):
        balanced_sample(pool, target=2)


def test_written_with_the_rl_writers_and_stages_kept(tmp_path):
    import pyarrow.parquet as pq

    pool = _pool({("closed", "CT"): 6, ("choice", "MRI"): 6}, per_record=3, image_dir=tmp_path)
    write_records(tmp_path / "kept.jsonl", pool)
    rc = main(["rl", "--kept", str(tmp_path / "kept.jsonl"), "--out", str(tmp_path / "rl"), "--target", "8"])
    assert rc == 0
    table = pq.read_table(tmp_path / "rl" / "sage_rl.parquet").to_pylist()
    assert len(table) == 8 and Counter(r["extra_info"]["question_type"] for r in table) == {"closed": 4, "choice": 4}
    assert all(r["reward_model"]["ground_truth"] in ("yes", "A") for r in table)
    easy = [json.loads(line) for line in (tmp_path / "rl" / "sage_rl.easyr1.jsonl").read_text().splitlines()]
    assert len(easy) == 8
    records = list(read_records(tmp_path / "rl" / "sage_rl.jsonl"))
    assert all(r.trajectory and r.trajectory.loc and r.trajectory.con for r in records)  # stage segmentation
    summary = json.loads((tmp_path / "rl" / "sage_rl.summary.json").read_text())
    assert summary["strata"]["closed/CT"] == {"available": 6, "chosen": 4}


def test_cli_reports_a_bad_record_file(tmp_path, capsys):
    (tmp_path / "kept.jsonl").write_text('{"id": "x"}\n')
    assert main(["rl", "--kept", str(tmp_path / "kept.jsonl"), "--out", str(tmp_path / "rl")]) == 2
    assert "kept.jsonl:1" in capsys.readouterr().err


def test_rows_carry_the_models_pixel_bounds_and_overlong_questions_are_set_aside(tmp_path):
    """A 1024x1024 image resized into Qwen2.5-VL-7B's bounds (1,003,520 px, as in SFT) is 980x980: 1,225 image
    tokens, over the RL recipe's 1,024-token prompt, so verl would drop the row; it is set aside with its reason."""
    import pyarrow.parquet as pq

    small = _pool({("closed", "CT"): 4}, per_record=1, image_dir=tmp_path)
    (tmp_path / "big").mkdir()
    big = _pool({("open", "MRI"): 2}, per_record=2, image_dir=tmp_path / "big", side=1024)
    write_records(tmp_path / "kept.jsonl", small + big)
    rc = main(["rl", "--kept", str(tmp_path / "kept.jsonl"), "--out", str(tmp_path / "rl"), "--target", "10",
               "--model", "qwen2_5_vl_7b"])
    assert rc == 0
    rows = pq.read_table(tmp_path / "rl" / "sage_rl.parquet").to_pylist()
    assert len(rows) == 4 and {r["extra_info"]["question_type"] for r in rows} == {"closed"}
    assert all(img["min_pixels"] == 3136 and img["max_pixels"] == 1003520 for r in rows for img in r["images"])
    rejected = [json.loads(line) for line in (tmp_path / "rl" / "sage_rl.rejected.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in rejected) == sorted(s.id for s in big)
    assert {(r["reason"], r["image_tokens"], r["max_prompt_length"]) for r in rejected} == {
        ("image-tokens-over-prompt-limit", 1225, 1024)}
    summary = json.loads((tmp_path / "rl" / "sage_rl.summary.json").read_text())["prompt_budget"]
    assert summary["rejected"] == 4 and summary["by_reason"] == {"image-tokens-over-prompt-limit": 4}
    # the tiny model's bounds (64 tokens at most) fit every row
    assert main(["rl", "--kept", str(tmp_path / "kept.jsonl"), "--out", str(tmp_path / "tiny"), "--model", "tiny"]) == 0
    assert len(pq.read_table(tmp_path / "tiny" / "sage_rl.parquet")) == 6
    assert (tmp_path / "tiny" / "sage_rl.rejected.jsonl").read_text() == ""


def test_only_draws_the_named_values_and_names_the_ones_present(tmp_path, capsys):
    import pyarrow.parquet as pq

    pool = _pool({("closed", "CT"): 4, ("choice", "MRI"): 4}, per_record=1, image_dir=tmp_path)
    write_records(tmp_path / "kept.jsonl", pool)
    base = ["rl", "--kept", str(tmp_path / "kept.jsonl"), "--target", "8"]
    assert main([*base, "--out", str(tmp_path / "rl"), "--only", "question_type=choice"]) == 0
    table = pq.read_table(tmp_path / "rl" / "sage_rl.parquet").to_pylist()
    assert len(table) == 4 and {r["extra_info"]["question_type"] for r in table} == {"choice"}
    assert main([*base, "--out", str(tmp_path / "none"), "--only", "modality=PET"]) == 2
    assert "modality values present: CT, MRI" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "bad"), "--only", "modality"]) == 2
    assert "expected KEY=V1,V2" in capsys.readouterr().err
