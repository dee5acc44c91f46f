"""locks/<stage>.txt stay in step with pyproject's GPU extras (`python -m medsage.launch.env_locks` writes them).

Fast: no resolver runs here; pyproject's requirements for each extra (core dependencies and `medsage[...]`
references expanded) are checked against the versions each lock pins, and the lock's header digest against
the inputs pyproject declares now.
"""

from __future__ import annotations

import pytest
from medsage.launch import env_locks as L

ROOT = L.checkout_root()
PYPROJECT = ROOT / "pyproject.toml"


@pytest.mark.parametrize("stage", list(L.STAGE_EXTRAS))
def test_each_lock_satisfies_its_extra_and_was_made_from_these_inputs(stage):
    problems = L.drift(stage)
    assert not problems, "\n".join(problems)


def test_extras_expand_the_core_dependencies_and_medsage_references():
    pyproject = L.read_pyproject(PYPROJECT)
    sft = L.extra_requirements(pyproject, "gpu-sft")
    assert "torch==2.11.0" in sft and "transformers==5.5.4" in sft  # from medsage[torch]
    assert "hydra-core>=1.3,<1.4" in sft and "uv>=0.5" in sft  # core dependencies
    assert not any(r.startswith("medsage") for r in sft)
    rl = L.extra_requirements(pyproject, "gpu-rl")
    assert "verl[vllm]==0.9.1" in rl and not any(r.startswith("torch") for r in rl)  # torch is verl's pin
    assert "llamafactory==0.9.5" not in rl


def test_only_what_resolves_a_lock_moves_its_digest(tmp_path):
    text = PYPROJECT.read_text()
    before = {x: L.inputs_digest(L.read_pyproject(PYPROJECT), x) for x in L.STAGE_EXTRAS.values()}
    edited = text.replace('"pytest>=8"', '"pytest>=8.1"').replace('format = "medsage.plugins', 'fmt = "medsage.plugins')
    assert edited != text
    (tmp_path / "pyproject.toml").write_text(edited)
    after = {x: L.inputs_digest(L.read_pyproject(tmp_path / "pyproject.toml"), x) for x in L.STAGE_EXTRAS.values()}
    assert after == before  # the dev extra and an entry point resolve no GPU lock
    (tmp_path / "pyproject.toml").write_text(text.replace('"pillow>=10"', '"pillow>=10.1"'))
    core = {x: L.inputs_digest(L.read_pyproject(tmp_path / "pyproject.toml"), x) for x in L.STAGE_EXTRAS.values()}
    assert all(core[x] != before[x] for x in before)  # a core dependency is in every lock


def test_drift_names_the_package_and_the_command(tmp_path):
    text = PYPROJECT.read_text()
    edited = text.replace('"deepspeed==0.18.4"', '"deepspeed==0.18.3", "a-package-no-lock-holds>=1"')
    assert edited != text
    (tmp_path / "pyproject.toml").write_text(edited)
    problems = L.drift("sft", tmp_path / "pyproject.toml", L.lock_path("sft"))
    fix = "regenerate it: python -m medsage.launch.env_locks --stage sft"
    assert any("pins deepspeed==0.18.4, which does not satisfy 'deepspeed==0.18.3'" in p for p in problems), problems
    assert any("has no a-package-no-lock-holds" in p for p in problems), problems
    assert any("resolved from other inputs" in p for p in problems), problems
    assert all(p.endswith(fix) for p in problems)


def test_a_lock_may_not_hold_flash_attn(tmp_path):
    lock = tmp_path / "rl.txt"
    lock.write_text(L.lock_path("rl").read_text() + "flash-attn==2.8.3          # via verl\n")
    problems = L.drift("rl", PYPROJECT, lock)
    assert len(problems) == 1 and "holds flash-attn==2.8.3" in problems[0] and "only its source" in problems[0]


def test_a_missing_lock_says_how_to_make_it(tmp_path):
    assert L.drift("eval", PYPROJECT, tmp_path / "eval.txt") == [
        f"{tmp_path / 'eval.txt'} is missing; regenerate it: python -m medsage.launch.env_locks --stage eval"]
