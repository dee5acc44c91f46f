"""`medsage scorer`: the recipe matches the training config, and bad input fails fast with a message."""

from __future__ import annotations

from dataclasses import fields

import yaml

from medsage.plugins.scorer.cli import main
from medsage.plugins.scorer.train import TrainConfig
from medsage.recipes import recipes_dir


def test_recipe_sets_every_training_field_with_a_comment():
    path = recipes_dir() / "scorer" / "minilm.yaml"
    lines = path.read_text().splitlines()
    assert lines[0] == "# @package _global_" and "medsage scorer train" in lines[2]
    cfg = yaml.safe_load(path.read_text())
    assert set(cfg) == {f.name for f in fields(TrainConfig)}
    TrainConfig(**cfg)  # the recipe's values pass the config's own checks
    for i, line in enumerate(lines):
        if line and not line.startswith(("#", " ")):
            assert lines[i - 1].startswith("#"), f"{path.name}: {line!r} has no comment above it"


def test_launcher_knows_the_verb(capsys):
    from medsage.launch.cli import main as medsage

    assert medsage(["--help"]) == 0
    assert "scorer" in capsys.readouterr().out


def test_bad_input_fails_before_any_model_is_loaded(tmp_path, capsys):
    missing = str(tmp_path / "nope.jsonl")
    assert main(["train", "--kept", missing, "--out", str(tmp_path / "ckpt")]) == 2
    assert "nope.jsonl" in capsys.readouterr().err
    (tmp_path / "kept.jsonl").write_text("")
    # An override right after --rejected is an override, not a second rejected file.
    assert main(["train", "--kept", str(tmp_path / "kept.jsonl"), "--out", str(tmp_path / "ckpt"),
                 "--rejected", missing, "epochs=0"]) == 2
    assert "epochs" in capsys.readouterr().err
    assert main(["train", "--kept", str(tmp_path / "kept.jsonl"), "--out", str(tmp_path / "ckpt"), "nonsense=1"]) == 2
    assert "nonsense" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(tmp_path), "--kept", missing]) == 2
    assert "not a scorer checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "ckpt").exists()
