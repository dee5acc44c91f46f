"""medsage.config.typed: a recipe section checked against its stage's dataclass, errors naming the key."""

import pytest

from medsage.config import ConfigError, typed
from medsage.data_pipeline.run import RunConfig

SOURCE = {"name": "deeplesion", "root": "/data/DL"}


@pytest.mark.parametrize("recipe, message", [
    ({"out_dir": "/o", "sources": [SOURCE], "shard_size": "many"}, "shard_size: Value 'many'"),
    ({"out_dir": "/o", "sources": [SOURCE], "dedup": {"threshhold": 3}}, "dedup.threshhold: Key 'threshhold' not in"),
    ({"out_dir": "/o", "sources": [{**SOURCE, "root": "???"}]}, "sources.0.root is required (???): set sources.0.root="),
    ({"sources": [SOURCE]}, "out_dir is required"),
    ({"out_dir": "/o", "sources": [SOURCE], "rois": {"jitter": 0.9}}, "jitter must be in [0, 0.5)"),
])
def test_a_bad_recipe_fails_naming_the_key(recipe, message):
    with pytest.raises(ConfigError) as err:
        typed(RunConfig, recipe, "recipes/data/x.yaml")
    assert str(err.value).startswith("recipes/data/x.yaml: ") and message in str(err.value)


def test_a_good_recipe_becomes_the_dataclasses():
    cfg = typed(RunConfig, {"out_dir": "/o", "sources": [{**SOURCE, "options": {"csv_name": "test.csv"}}],
                            "dedup": {"threshold": 8}}, "r")
    assert cfg.sources[0].options == {"csv_name": "test.csv"} and cfg.dedup.threshold == 8 and cfg.shard_size == 500
    assert type(cfg.sources[0]).__name__ == "SourceSpec"


def test_the_eval_and_judge_sections_are_typed():
    from medsage.eval.judge import JudgeConfig
    from medsage.eval.run import EvalConfig
    from medsage.recipes import compose

    cfg = compose("eval", ["model=tiny", "model.path=/m", "eval.data_root=/d"])
    ev, prompt = EvalConfig.from_recipe(cfg)
    assert ev.batch_size == 8 and ev.generation.max_new_tokens == 1024 and ev.backend["name"] == "hf"
    assert "{question}" in prompt.template and set(prompt.instructions) == {"closed", "open", "choice"}
    assert ev.benchmarks["vqa_rad"]["path"].startswith("/d/")
    with pytest.raises(ConfigError, match=r"eval\.batch_size: Value 'many'"):
        EvalConfig.from_recipe(compose("eval", ["model=tiny", "model.path=/m", "eval.data_root=/d",
                                                "eval.batch_size=many"]))
    with pytest.raises(ConfigError, match=r"eval\.judge\.base_url is required \(\?\?\?\): set eval\.judge\.base_url="):
        JudgeConfig.from_cfg(cfg.eval.judge)
    judge = JudgeConfig.from_cfg(compose("eval", ["eval.data_root=/d", "eval.judge.base_url=http://127.0.0.1:1/v1"]).eval.judge)
    assert judge.dimensions == ["localization", "visual_analysis", "knowledge", "reasoning"]


def test_a_synthesizer_gets_its_own_typed_section_not_the_recipe():
    from medsage.data_pipeline.synthesis.rpa import synthesizer_section
    from medsage.registry import SYNTHESIZERS

    template = SYNTHESIZERS.get("template")
    recipe = {"synthesizer": "template", "templates_file": "t.yaml", "knowledge_file": "k.yaml", "seed": 0,
              "client": {"base_url": "???", "model": "???"}, "rpa": {"mode": "rpa"}}
    assert synthesizer_section(template, recipe) == template.Config(templates_file="t.yaml", knowledge_file="k.yaml")
    with pytest.raises(ConfigError, match="knowledge_file is required"):
        synthesizer_section(template, {"templates_file": "t.yaml"})
    llm = synthesizer_section(SYNTHESIZERS.get("llm"), {**recipe, "prompts_file": "p.yaml"})
    assert llm.prompts_file == "p.yaml" and llm.knowledge_base is None
