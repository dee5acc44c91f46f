"""Leak checks (the checkable prompt rules of Figures 8-11) and the prompt recipe loaders."""

from __future__ import annotations

import pytest

from medsage.data_pipeline.synthesis.leaks import (check_answer, check_knowledge, check_localization, finding_labels,
                                               guidance_label, reference_answer)
from medsage.data_pipeline.synthesis.prompts import PromptError, load_knowledge, load_prompts, load_templates
from medsage.records import RoI, Sample


def _sample(kind="open", answer="liver", options=None, label="liver"):
    return Sample(id="s1", source="t", images=["x.png"], question="Which organ?", answer=answer,
                  question_type=kind, options=options,
                  rois=[RoI("box", box=(1, 1, 9, 9), label=label), RoI("text", text="left lobe", label="anatomical location"),
                        RoI("global", box=(0, 0, 10, 10), label="full image", origin="global")])


@pytest.mark.parametrize("prose", [
    "The region is at (120, 40) in the upper abdomen.",
    "Look at [315, 742, 785, 968].",
    "The lesion spans 12,40,80 of the slice.",
    "Region x1=30 to x2=60.",
    "About 45 px below the diaphragm.",
    'Here {"box_2d": [1, 2, 3, 4]}',
    "Its bounding box covers the left lobe.",
])
def test_coordinates_in_localization_are_caught(prose):
    (leak,) = check_localization(prose)
    assert leak.code == "coordinates_in_loc"


@pytest.mark.parametrize("prose", [
    "The region of interest is the right lower lobe, posterior segment.",
    "The lesion is at the level of the C3 vertebra, segment 7 of the liver.",
])
def test_anatomical_prose_passes(prose):
    assert check_localization(prose) == []


def test_label_in_knowledge():
    labels = finding_labels(_sample())
    assert labels == ["liver"]  # answer and annotated box label; generic RoI names are not labels
    assert check_knowledge("- Hepatic lesions differ in attenuation.", labels) == []
    assert [l.code for l in check_knowledge("- Liver lesions differ in attenuation.", labels)] == ["label_in_knowledge"]
    assert check_knowledge("- Such livers enlarge.", labels)  # a plural still names it
    assert check_knowledge("- The deliverable is fine.", labels) == []  # a word containing it does not


def test_labels_per_question_type():
    choice = _sample("choice", "B", {"A": "Lung", "B": "Soft tissue"}, label="soft tissue")
    assert finding_labels(choice) == ["soft tissue"]
    assert check_knowledge("Soft-tissue lesions are common.", finding_labels(choice))  # punctuation does not hide it
    closed = _sample("closed", "yes", label="nodule")
    assert finding_labels(closed) == ["nodule"]  # never "yes"
    assert guidance_label(closed) == "nodule"
    assert reference_answer(closed) == "Yes"
    assert reference_answer(choice) == "Soft tissue"  # the option text: the scorer resolves it to B


@pytest.mark.parametrize("kind,answer,options,said,ok", [
    ("closed", "yes", None, "Yes, a lesion is present.", True),
    ("closed", "yes", None, "No.", False),
    ("choice", "B", {"A": "Lung", "B": "Liver"}, "B. Liver", True),
    ("choice", "B", {"A": "Lung", "B": "Liver"}, "A", False),
    ("open", "liver", None, "Liver", True),
    ("open", "liver", None, "Findings are consistent with a liver lesion", True),  # full recall
    ("open", "right kidney", None, "kidney", False),
])
def test_answer_must_match_ground_truth(kind, answer, options, said, ok):
    s = _sample(kind, answer, options)
    leaks = check_answer(said, s)
    assert (leaks == []) is ok
    if not ok:
        assert leaks[0].code == "answer_mismatch"


def test_shipped_recipes_load_and_knowledge_never_names_its_label():
    prompts = load_prompts("synthesis/prompts.yaml")
    assert set(prompts) == {"loc", "vis", "know", "con", "verify", "propose", "roi_check"}
    templates = load_templates("synthesis/templates.yaml")
    assert len(templates) >= 2
    table = load_knowledge("synthesis/knowledge.yaml", templates)
    for label, entry in table.items():
        if label == "_default":
            continue
        for template, sentence in entry.items():
            assert check_knowledge(sentence, [label]) == [], (label, template, sentence)


def test_prompt_files_are_validated(tmp_path):
    good = load_prompts("synthesis/prompts.yaml")
    bad = tmp_path / "p.yaml"
    import yaml

    data = {k: {"system": v.system, "user": v.user} for k, v in good.items()}
    data["loc"]["user"] = "Question: {question} {coordinates}"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(PromptError, match=r"p\.yaml.*'loc'.*coordinates"):
        load_prompts(bad)
    del data["vis"]
    data["loc"]["user"] = "{question}"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(PromptError, match="'vis'"):
        load_prompts(bad)
    with pytest.raises(PromptError, match="cannot read"):
        load_prompts(tmp_path / "missing.yaml")
    (tmp_path / "k.yaml").write_text("knowledge:\n  _default:\n    morphology: x\n")
    with pytest.raises(PromptError, match="_default.*intensity"):
        load_knowledge(tmp_path / "k.yaml", load_templates("synthesis/templates.yaml"))


def test_synthesis_recipes_have_a_command_header_and_document_every_field():
    import re

    from medsage.recipes import recipes_dir

    key_re = re.compile(r"^(\s*)([A-Za-z_][\w ]*):(\s.*)?$")
    for path in sorted((recipes_dir() / "synthesis").glob("*.yaml")):
        lines = path.read_text().splitlines()
        assert "medsage data synth" in "\n".join(lines[:4]), f"{path}: no command header"
        if path.name in ("knowledge.yaml", "knowledge_base.yaml"):
            continue  # data tables (label -> template -> sentence; knowledge entries), documented by their header
        block_indent = None  # inside a `key: |` block scalar, lines are text, not fields
        previous = ""
        for n, line in enumerate(lines, 1):
            indent = len(line) - len(line.lstrip())
            if block_indent is not None:
                if not line.strip() or indent > block_indent:
                    continue
                block_indent = None
            m = key_re.match(line)
            if m and not line.lstrip().startswith("#"):
                assert previous.lstrip().startswith("#") or " # " in line, f"{path}:{n}: field without a comment"
                if (m.group(3) or "").strip() in ("|", ">"):
                    block_indent = indent
            if line.strip():
                previous = line


def test_default_recipe_composes_with_overrides():
    from medsage.recipes import compose

    cfg = compose("synthesis/default", ["synthesizer=llm", "client.model=gpt-4o", "verify.k=3"])
    assert cfg.synthesizer == "llm" and cfg.client.model == "gpt-4o" and cfg.verify.k == 3
    assert cfg.client.api_key_env == "OPENAI_API_KEY"  # the variable's name, never a key
