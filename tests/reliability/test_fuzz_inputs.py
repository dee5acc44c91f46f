"""Seeded, bounded fuzzing of every source adapter and of `eval score` with generated hostile inputs.

Each adapter gets a few hundred entries drawn from the ways real exports and hostile sources go wrong
(paths out of the root, NaN/inf/huge numbers, wrong types, short and long rows, bytes that are not UTF-8,
decompression bombs, truncated, 16-bit and fake images, symlinks out, duplicates). Asserted: no exception
escapes the run, inputs = kept + rejected, every rejection has a reason and names a file, and nothing is
written outside out_dir. The seeds are fixed, so a failure reproduces; the sizes keep it to seconds.
"""

from __future__ import annotations

import csv
import io
import json
import random
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medsage.data_pipeline.run import RunConfig, run

SEEDS = (0, 1)
N = 110  # entries per adapter and seed: 4 adapters x 2 seeds x 110 = 880 inputs, plus 400 prediction lines

NUMBERS = ["1", "0", "-3", "12.5", "nan", "NaN", "inf", "-inf", "1e999", "-1e999", "", " ", "x", "0x10", "1,2",
           "\u0661", "1_000", "None", "true"]
JSON_NUMBERS = [0, 1, -5, 3.5, 1e308, -1e308, float("nan"), float("inf"), float("-inf"), True, None, "7", [1], {}]
STRINGS = ["", " ", "ok", "../x", "/etc/passwd", "a/../../b", "\x00", "é", "\u202e", "x" * 300, "C:\\x", "~/x"]


def _png_bomb(path: Path) -> None:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 32)) + chunk(b"IEND", b""))


def _image_pool(folder: Path, outside: Path, rng: random.Random) -> list[str]:
    """Image files of every kind next to each other; returns their names (relative to ``folder``)."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(3):
        arr = (np.random.default_rng(i).random((96, 96)) * 200).astype(np.uint8)
        Image.fromarray(arr).save(folder / f"good{i}.png")
        names.append(f"good{i}.png")
    Image.fromarray((np.random.default_rng(9).random((80, 80)) * 4000).astype(np.uint16)).save(folder / "wide.png")
    Image.fromarray(np.full((96, 96), 7, np.uint8)).save(folder / "flat.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "tiny.png")
    data = (folder / "good0.png").read_bytes()
    (folder / "cut.png").write_bytes(data[: len(data) // 3])
    (folder / "text.png").write_text("not an image")
    _png_bomb(folder / "bomb.png")
    (folder / "link.png").symlink_to(outside)
    names += ["wide.png", "flat.png", "tiny.png", "cut.png", "text.png", "bomb.png", "link.png", "missing.png"]
    return names


def _outside(tmp_path: Path) -> Path:
    target = tmp_path / "outside" / "secret.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.random.default_rng(5).random((96, 96)) * 255).astype(np.uint8)).save(target)
    return target


def pick(rng: random.Random, good, bad: list, p_bad: float = 0.15):
    """``good`` most of the time (so later stages are reached too), a hostile value otherwise."""
    return rng.choice(bad) if rng.random() < p_bad else good


def _bytes_noise(rng: random.Random, text: str) -> bytes:
    data = text.encode("utf-8")
    if rng.random() < 0.04 and data:
        at = rng.randrange(len(data))
        data = data[:at] + bytes([rng.choice([0xFF, 0xFE, 0xC3, 0x80])]) + data[at:]
    return data


# --------------------------------------------------------------------------------------------
# Generators, one per source layout
# --------------------------------------------------------------------------------------------


def make_deeplesion(root: Path, outside: Path, rng: random.Random) -> None:
    from medsage.launch.demo.sources import DL_COLUMNS

    slices = root / "Images_png" / "000001_01_01"
    slices.mkdir(parents=True)
    for i in range(3):
        arr = (np.random.default_rng(i).random((96, 96)) * 1500 + 32768 - 500).astype(np.uint16)
        Image.fromarray(arr).save(slices / f"{100 + i}.png")
    Image.fromarray(np.full((96, 96), 200, np.uint8)).save(slices / "110.png")  # 8-bit export
    _png_bomb(slices / "111.png")
    (slices / "112.png").write_bytes(b"\x89PNG broken")
    (slices / "113.png").symlink_to(outside)
    names = [f"000001_01_01_{n}.png" for n in (100, 101, 102, 110, 111, 112, 113, 199)]
    names += ["../../000001_01_01_100.png", "/etc/000001_01_01_100.png", "000001_01_01_100.jpg", "a_b.png",
              "000001_01_01_..png", ""]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(DL_COLUMNS)
    lines = [buf.getvalue().encode()]
    for _ in range(N):
        x, y = rng.uniform(0, 60), rng.uniform(0, 60)
        box = pick(rng, [x, y, x + rng.uniform(4, 30), y + rng.uniform(4, 30)],
                   [[float("nan")] * 4, [1, 2, float("inf"), 3], [1, 2, 3], [-50, -50, 500, 500], [30, 30, 10, 10]])
        row = {c: pick(rng, "1", NUMBERS) for c in DL_COLUMNS}
        row.update(File_name=pick(rng, rng.choice(names[:3]), names[3:], 0.3),
                   Bounding_boxes=", ".join(f"{v:.2f}" for v in box),
                   Coarse_lesion_type=pick(rng, rng.choice(["1", "4", "5", "-1"]), ["9", *NUMBERS]),
                   DICOM_windows=pick(rng, "-175, 275", ["275, -175", "nan, 3", "a, b", ""]),
                   Train_Val_Test=pick(rng, rng.choice(["1", "2", "3"]), NUMBERS), Possibly_noisy=rng.choice(["0", "1", ""]))
        values = [str(row[c]) for c in DL_COLUMNS]
        if rng.random() < 0.05:
            values = values[: rng.randrange(1, len(values))]  # short row
        elif rng.random() < 0.03:
            values += ["extra", "fields"]  # long row
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(values)
        lines.append(_bytes_noise(rng, buf.getvalue()))
    (root / "DL_info.csv").write_bytes(b"".join(lines))


def make_coco(root: Path, outside: Path, rng: random.Random) -> None:
    for split in ("train", "valid"):
        folder = root / split
        pool = _image_pool(folder, outside, rng)
        pool += ["../../outside/secret.png", str(outside), "../valid/good0.png" if split == "train" else "x/../good1.png"]
        cats = [{"id": 0, "name": "proj", "supercategory": "none"}, {"id": 1, "name": "a", "supercategory": "proj"},
                {"id": 2, "name": "b", "supercategory": "proj"}]
        images, anns = [], []
        for i in range(N // 2):
            shutil.copy(folder / rng.choice(pool[:3]), folder / f"img{i:03d}.png")  # one picture per entry
            entry = {"id": pick(rng, i, [str(i), i - 1, None, [i]]),
                     "file_name": pick(rng, f"img{i:03d}.png", pool, 0.3),
                     "width": pick(rng, 96, [80, 0, -1, None, "w"]), "height": 96}
            if rng.random() < 0.05:
                del entry["file_name"]
            elif rng.random() < 0.05:
                entry["file_name"] = rng.choice(JSON_NUMBERS + STRINGS)
            images.append(entry)
            for _ in range(rng.choice([0, 1, 1, 1, 2, 3])):
                bbox = pick(rng, [rng.uniform(0, 50), rng.uniform(0, 50), rng.uniform(5, 40), rng.uniform(5, 40)],
                            [[rng.choice(JSON_NUMBERS) for _ in range(4)], [1, 2], [1, 2, 3, 4, 5], "10 10 5 5", None])
                ann = {"id": len(anns), "image_id": i, "category_id": pick(rng, rng.choice([1, 2]), [0, 7, None, "1"]),
                       "bbox": bbox}
                anns.append(ann)
        text = json.dumps({"images": images, "annotations": anns, "categories": cats})  # NaN/Infinity literals
        (folder / "_annotations.coco.json").write_text(text)


def make_yolo(root: Path, outside: Path, rng: random.Random) -> None:
    root.mkdir(parents=True)
    (root / "data.yaml").write_text("train: ../train/images\nval: ../valid/images\nnames: ['a', 'b']\n")
    for split in ("train", "valid"):
        pool = _image_pool(root / split / "pool", outside, rng)
        images, labels = root / split / "images", root / split / "labels"
        images.mkdir(parents=True)
        labels.mkdir(parents=True)
        for i in range(N // 2):
            src = root / split / "pool" / pick(rng, rng.choice(pool[:3]), pool[3:], 0.4)
            (images / f"im{i:03d}.png").symlink_to(src)  # a link inside the root, to every kind of file
            if rng.random() < 0.1:
                continue  # no label file
            rows = []
            for _ in range(rng.choice([0, 1, 1, 2])):
                good = [rng.choice(["0", "1"]), *(f"{rng.uniform(0.3, 0.7):.3f}" for _ in range(2)),
                        *(f"{rng.uniform(0.1, 0.3):.3f}" for _ in range(2))]
                bad = [[rng.choice(["2", "-1", "1.5", "x"]), *good[1:]], good[:4], good + ["9"],
                       [good[0], rng.choice(NUMBERS[:10]), *good[2:]]]
                rows.append(" ".join(pick(rng, good, bad, 0.2)))
            (labels / f"im{i:03d}.txt").write_bytes(_bytes_noise(rng, "\n".join(rows) + "\n"))


def make_pubmedvision(root: Path, outside: Path, rng: random.Random) -> None:
    pool = _image_pool(root / "images", outside, rng)
    pool = [f"images/{p}" for p in pool] + ["../outside/secret.png", str(outside), "images/../../outside/secret.png"]
    items = []
    for i in range(N):
        human = pick(rng, "<image>\nWhat is shown in the left lung?", ["<image>", "", 5, None, "Q?"])
        gpt = pick(rng, "A mass in the right lower lobe (white arrow).", ["", None, ["x"], "Normal."])
        conv = [{"from": "human", "value": human}, {"from": "gpt", "value": gpt}]
        item = {"id": rng.choice([f"p{i}", i, None, ["x"], "../../x", "a/b"]),
                "image": pick(rng, [rng.choice(pool[:3])], [[rng.choice(pool)], rng.choice(pool), [],
                                                             [rng.choice(pool), 3], None, 7, [pool[-1]], pool[-3]], 0.4),
                "conversations": pick(rng, conv, [[], "text", [conv[0]], [1, 2]]),
                "modality": rng.choice(["CT", None, 3, ["MRI"]])}
        items.append(pick(rng, item, [None, [item], "item", 3], 0.05))
    (root / "PubMedVision_Alignment_VQA.json").write_text(json.dumps(items))


ADAPTERS = {"deeplesion": make_deeplesion, "roboflow_coco": make_coco, "roboflow_yolo": make_yolo,
            "pubmedvision": make_pubmedvision}
NAMES_A_FILE = {"deeplesion": "DL_info.csv", "roboflow_coco": "_annotations.coco.json", "roboflow_yolo": ".txt",
                "pubmedvision": "PubMedVision_Alignment_VQA.json"}


def _tree(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", list(ADAPTERS))
def test_hostile_source_inputs_end_as_records_or_named_rejections(tmp_path, kind, seed):
    rng = random.Random(f"{kind}:{seed}")
    outside = _outside(tmp_path)
    root = tmp_path / "src"
    ADAPTERS[kind](root, outside, rng)
    out = tmp_path / "out"
    before = _tree(tmp_path)
    cfg = RunConfig.from_dict({"out_dir": str(out), "sources": [{"name": kind, "root": str(root)}], "shard_size": 16,
                               "dedup": {"within_train": False}, "write": {"easyr1_format": "jsonl"}})
    summary = run(cfg)  # any exception escaping is a failure of the test
    entry = summary["sources"][kind]
    assert entry["inputs"] >= N - 2 and entry["kept"] + entry["rejected"] == entry["inputs"]
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    assert len(rejected) == entry["rejected"]
    for r in rejected:
        assert r["reason"] and r["detail"], r
        assert r["images"] or str(root) in r["detail"] or NAMES_A_FILE[kind] in r["detail"], r
    kept = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert all(Path(p).resolve().is_relative_to(root.resolve()) or Path(p).is_relative_to(out)
               for r in kept for p in r["images"]), "a kept record points outside the root"
    after = _tree(tmp_path)
    changed = [p for p in after if not Path(p).is_relative_to(out) and after[p] != before.get(p)]
    assert not changed, f"written outside out_dir: {changed[:5]}"
    assert len(set(rejected_reason["reason"] for rejected_reason in rejected)) >= 3  # the fuzz did reach the checks


ANNOTATION_FILES = {"deeplesion": "DL_info.csv", "roboflow_coco": "train/_annotations.coco.json",
                    "roboflow_yolo": "data.yaml", "pubmedvision": "PubMedVision_Alignment_VQA.json"}
CORRUPTIONS = [lambda b: b[: len(b) // 2], lambda b: b"", lambda b: b"\xff\xfe" + b, lambda b: b"[1, 2, 3]",
               lambda b: b"null", lambda b: b'"' + b"x" * 200_000 + b'"\n']


@pytest.mark.parametrize("kind", list(ADAPTERS))
def test_a_whole_unreadable_annotation_file_is_an_error_naming_it(tmp_path, kind):
    outside = _outside(tmp_path)
    root = tmp_path / "src"
    ADAPTERS[kind](root, outside, random.Random(kind))
    path = root / ANNOTATION_FILES[kind]
    original = path.read_bytes()
    for n, corrupt in enumerate(CORRUPTIONS):
        path.write_bytes(corrupt(original))
        cfg = RunConfig.from_dict({"out_dir": str(tmp_path / f"out{n}"), "sources": [{"name": kind, "root": str(root)}]})
        try:
            run(cfg)  # a corruption that still parses (half a CSV) is fine: its rows were checked above
        except (ValueError, FileNotFoundError) as err:
            assert path.name in str(err), (n, err)


# --------------------------------------------------------------------------------------------
# eval score
# --------------------------------------------------------------------------------------------


def _prediction_line(rng: random.Random) -> bytes:
    row = {"id": rng.choice(["1", 2, None, True, [1]]), "prediction": rng.choice(["<ANSWER>yes</ANSWER>", "B", "", None, 3]),
           "question": rng.choice(["q", "", None, 1, ["q"]]), "answer": rng.choice(["yes", "B", "", None, 0, float("nan")]),
           "answer_type": rng.choice(["closed", "open", "choice", "binary", None, 1]),
           "options": rng.choice([None, {"A": "x", "B": "y"}, {"A": 1}, ["x"], "AB"]),
           "accepted_answers": rng.choice([None, ["yes"], "yes", [1], {}]), "benchmark": rng.choice(["b", None, 1])}
    for k in list(row):
        if rng.random() < 0.1:
            del row[k]
    text = json.dumps(row)
    shape = rng.random()
    if shape < 0.05:
        text = text[: rng.randrange(len(text))]
    elif shape < 0.08:
        text = rng.choice(["[]", "3", "null", '"s"', "{", ""])
    return _bytes_noise(rng, text)


@pytest.mark.parametrize("seed", SEEDS)
def test_hostile_prediction_files_are_scored_or_refused_by_line(tmp_path, seed):
    from medsage.eval.scoring import PredictionError, score_predictions

    rng = random.Random(f"score:{seed}")
    scored = refused = 0
    for f in range(20):
        lines = [_prediction_line(rng) for _ in range(10)]
        path = tmp_path / f"p{f}.jsonl"
        path.write_bytes(b"\n".join(lines) + (b"\n" if rng.random() < 0.7 else b""))
        try:
            verdicts, _, summary = score_predictions(path, out_dir=tmp_path / "out")
        except PredictionError as err:
            refused += 1
            assert str(path) in str(err) and ("line " in str(err) or f"{path}:" in str(err)), err
            continue
        scored += 1
        n = sum(s["n"] for s in summary.values())
        assert n == len(verdicts.read_text().splitlines())
    assert scored + refused == 20 and refused  # the generator does reach the refusals


# --------------------------------------------------------------------------------------------
# Launch-time refusals: a folder in use, bad recipe values, bad model folders, unwritable outputs
# --------------------------------------------------------------------------------------------
# Every case is refused before an engine starts (no training, no generation, no Ray): asserted a non-zero exit,
# one line on stderr naming the cause, no traceback, and nothing written where the refused run would write.


@pytest.fixture
def launch(tiny_model_dir, demo_samples, tmp_path, monkeypatch):
    """``(verb name) -> argv`` builders of cheap real commands writing into ``out``; the pipeline never reaches Ray."""
    from medsage.launch.demo.sources import make_roboflow_yolo
    from medsage.launch.pipeline import app
    from medsage.records import write_records

    def no_cluster(*args, **kwargs):
        raise AssertionError("the pipeline got as far as starting Ray")

    monkeypatch.setattr(app, "_cluster", no_cluster)
    monkeypatch.chdir(tmp_path)
    records = write_records(tmp_path / "recs" / "records.jsonl", demo_samples[:2])
    yolo = make_roboflow_yolo(tmp_path / "yolo")
    return {
        "data ingest": lambda out: ["data", "ingest", "--source", "roboflow_yolo", "--root", str(yolo),
                                    "--out", str(out)],
        "data synth run": lambda out: ["data", "synth", "run", "--records", str(records), "--out", str(out),
                                       "synthesizer=template", "verify.mode=none"],
        "eval run": lambda out, model=tiny_model_dir: ["eval", "run", "model=tiny", f"model.path={model}",
                                                       "eval/benchmarks=records", f"eval.data_root={records.parent}",
                                                       f"eval.output_dir={out}"],
        "rl": lambda out, model=tiny_model_dir: ["rl", "model=tiny", f"model.path={model}", "cluster=local_cpu",
                                                 f"train_files={tmp_path / 'train.parquet'}", f"output_dir={out}",
                                                 "dry_run=true"],
        "view": lambda out: ["view", str(records), "--out", str(out)],
        "pipeline": lambda out: ["pipeline", "+experiment=demo", f"run_root={out}"],
    }


def _refused(capsys, code: int, *named: str) -> str:
    err = capsys.readouterr().err.strip()
    assert code != 0, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert all(n in err for n in named), (named, err)
    return err


LOCKED = {"data ingest": "data run", "data synth run": "synthesis run", "eval run": "evaluation",
          "pipeline": "pipeline"}  # verb -> what its lock says it is


@pytest.mark.parametrize("verb", list(LOCKED))
def test_a_second_run_on_a_folder_in_use_is_refused(launch, tmp_path, capsys, verb):
    from medsage.launch.cli import main
    from medsage.lock import LOCK_NAME, folder_lock

    out = tmp_path / "out"
    with folder_lock(out, LOCKED[verb]):  # a real flock, as the first run holds it
        code = main(launch[verb](out))
        _refused(capsys, code, str(out), f"in use by another {LOCKED[verb]}", "pid ")
        assert [p.name for p in out.iterdir()] == [LOCK_NAME]


RL_BAD = {  # keys of recipes/rl.yaml and values each refuses
    "rl.rollout_n": ["0", "1", "-2", "2.5", "x", "null"], "rl.micro_batch_per_device": ["0", "-1", "1.5", "''"],
    "rl.grad_accum": ["0", "-4", "[1]"], "rl.epochs": ["0", "-1", "nan"], "rl.rollout_batch_prompts": ["0", "-3", "x"],
    "rl.alpha": ["-0.1", "nan", "inf", "-inf", "x", "{a:1}"], "rl.kl_coef": ["-1", "nan", "true"],
    "rl.lr": ["0", "-1e-6", "1e999", "nan"], "rl.temperature": ["0", "-1", "inf"], "rl.save_freq": ["0", "-2"],
    "rl.max_response_length": ["0", "-1"], "rl.gpu_memory_utilization": ["0", "1.5", "-0.5"],
}
EVAL_BAD = {"eval.batch_size": ["0", "-1", "2.5", "x", "null"], "eval.limit": ["0", "-1", "nan", "[3]"]}


@pytest.mark.parametrize("seed", SEEDS)
def test_bad_rl_and_eval_recipe_values_are_refused_before_launch(launch, tmp_path, capsys, seed):
    from medsage.launch.cli import main

    rng = random.Random(f"recipe:{seed}")
    for n in range(10):
        verb, table = rng.choice([("rl", RL_BAD), ("rl", RL_BAD), ("eval run", EVAL_BAD)])
        keys = rng.sample(sorted(table), rng.choice([1, 1, 2]))
        bad = [f"{k}={rng.choice(table[k])}" for k in keys]
        out = tmp_path / f"out{n}"
        code = main([*launch[verb](out), *bad])
        err = _refused(capsys, code)
        assert any(k in err for k in keys), (bad, err)
        assert not (out / "verl_config.yaml").exists() and not (out / "records").exists(), bad


def _broken_model(tiny: Path, dest: Path, rng: random.Random) -> tuple[str, str]:
    """A copy of the tiny model broken in one or two ways; (model.path, a word the refusal must say)."""
    import shutil

    kind = rng.choice(["no config", "no tokenizer", "no processor", "no weights", "config not json", "config a list",
                       "text only", "verl checkpoint", "a file", "missing", "empty"])
    if kind == "empty":
        return "", "model.path is empty"
    if kind == "missing":
        return str(dest), "no such folder"
    if kind == "a file":
        dest.write_text("not a model\n")
        return str(dest), "a file"
    folder = dest / "actor" / "huggingface" if kind == "verl checkpoint" else dest
    shutil.copytree(tiny, folder)
    drop = {"no config": ["config.json"], "no tokenizer": ["tokenizer.json", "tokenizer_config.json", "vocab.json"],
            "no processor": ["preprocessor_config.json", "processor_config.json"],
            "no weights": [p.name for p in folder.glob("*.safetensors")]}.get(kind, [])
    for name in drop + ([rng.choice(["generation_config.json", "chat_template.jinja"])] if rng.random() < 0.5 else []):
        (folder / name).unlink(missing_ok=True)
    config = folder / "config.json"
    if kind == "config not json":
        config.write_bytes(config.read_bytes()[: rng.randrange(1, 40)] + b"\xff")
    elif kind == "config a list":
        config.write_text("[1, 2]")
    elif kind == "text only":
        data = json.loads(config.read_text())
        data.pop("vision_config", None)
        config.write_text(json.dumps(data))
    said = {"verl checkpoint": "actor/huggingface", "config not json": "config.json", "config a list": "text-only",
            "text only": "text-only"}.get(kind, "missing")
    return str(dest), said


@pytest.mark.parametrize("seed", SEEDS)
def test_broken_model_folders_are_named_before_any_engine_loads_them(launch, tiny_model_dir, tmp_path, capsys, seed):
    from medsage.launch.cli import main

    rng = random.Random(f"model:{seed}")
    for n in range(8):
        path, said = _broken_model(Path(tiny_model_dir), tmp_path / f"model{n}", rng)
        out = tmp_path / f"out{n}"
        code = main(launch["eval run"](out, model=path))
        _refused(capsys, code, said, path)
        assert not (out / "records").exists()


@pytest.mark.parametrize("verb", ["data ingest", "data synth run", "eval run", "rl", "view", "pipeline"])
@pytest.mark.parametrize("shape", ["under a file", "is a file"])
def test_an_output_that_cannot_be_written_is_one_line(launch, tmp_path, capsys, verb, shape):
    from medsage.launch.cli import main

    blocker = tmp_path / "in_the_way"
    blocker.write_text("a file where a folder should be\n")
    out = blocker / "out" if shape == "under a file" else blocker
    code = main(launch[verb](out))
    _refused(capsys, code, str(blocker))
    assert blocker.read_text() == "a file where a folder should be\n"
