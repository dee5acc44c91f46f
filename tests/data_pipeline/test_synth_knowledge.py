"""The knowledge base of knowledge matching (A.3.4): a user file, BM25 retrieval (rank-bm25), the entries in the
knowledge prompt and their ids in provenance. The LLM path runs against the scripted loopback server."""

from __future__ import annotations

import json

import pytest
import synth_server as H  # tests/helpers (pytest pythonpath)
from omegaconf import OmegaConf

from medsage.data_pipeline.synthesis.knowledge import KnowledgeBase, KnowledgeError, load_entries
from medsage.data_pipeline.synthesis.prompts import load_prompts
from medsage.data_pipeline.synthesis.run import run_synthesis
from medsage.recipes import compose

PROMPTS = load_prompts("synthesis/prompts.yaml")


def test_seed_file_loads_and_bm25_ranks_the_matching_entry_first():
    entries = load_entries("synthesis/knowledge_base.yaml")
    assert len(entries) >= 25 and len({e.id for e in entries}) == len(entries)
    assert {e.kind for e in entries} == {"disease", "sign", "differential", "guideline"}
    kb = KnowledgeBase(entries)
    assert kb.retrieve("fluid blunting the costophrenic angle of the chest", 3)[0].id == "pleural-effusion"
    assert kb.retrieve("a lucent line through the cortex after trauma", 3)[0].id == "fracture-sign"
    assert kb.retrieve("Is there evidence of liver in this image? liver", 1)[0].id == "liver-focal-lesion"
    assert kb.retrieve("the of and", 3) == []  # stop words only: nothing is retrieved


def test_user_jsonl_file_and_its_errors(tmp_path):
    good = tmp_path / "kb.jsonl"
    good.write_text(json.dumps({"id": "x", "text": "Zebra stripes mean a striated pattern.", "tags": ["zebra"]}) + "\n")
    assert [e.id for e in load_entries(good)] == ["x"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "a", "text": "t"}) + "\n{oops\n")
    with pytest.raises(KnowledgeError, match=r"bad\.jsonl:2: not valid JSON"):
        load_entries(bad)
    bad.write_text(json.dumps({"id": "a", "txt": "t"}) + "\n")
    with pytest.raises(KnowledgeError, match=r"bad\.jsonl:1: unknown key"):
        load_entries(bad)
    bad.write_text(json.dumps({"id": "a", "text": "t"}) + "\n" + json.dumps({"id": "a", "text": "u"}) + "\n")
    with pytest.raises(KnowledgeError, match="appears twice"):
        load_entries(bad)


def _cfg(base_url, **extra):
    over = {"synthesizer": "llm", "client.base_url": base_url, "client.model": "scripted", "client.backoff_s": 0.01,
            "rpa.max_templates": 1, "verify.k": 0, **extra}
    return OmegaConf.to_container(compose("synthesis/default", [f"{k}={v}" for k, v in over.items()]))


def _know_texts(server):
    return [H.user_text(b) for b in server.requests
            if b["messages"][0]["content"].strip() == PROMPTS["know"].system.strip()]


def test_retrieval_changes_the_knowledge_prompt_and_is_kept_in_provenance(demo_samples, tmp_path):
    kb = tmp_path / "kb.jsonl"
    kb.write_text("".join(json.dumps(e) + "\n" for e in [
        {"id": "focus-rule", "title": "Bright foci", "text": "A sharply marginated bright focus is a contained process.",
         "tags": ["rounded", "marginated", "focus", "brighter"]},
        {"id": "unrelated", "text": "Dental caries erode enamel.", "tags": ["tooth"]}]))
    records = demo_samples[:2]
    for s in records:
        s.trajectory = None
    with H.LoopbackServer(H.LvkcScript(PROMPTS)) as server:
        with_kb = run_synthesis(records, _cfg(server.base_url, **{"knowledge_base.file": str(kb)}), tmp_path / "a")
        texts_kb = _know_texts(server)
    with H.LoopbackServer(H.LvkcScript(PROMPTS)) as server:
        run_synthesis(records, _cfg(server.base_url, **{"knowledge_base.file": "null"}), tmp_path / "b")
        texts_none = _know_texts(server)
    assert texts_kb and texts_none and not set(texts_kb) & set(texts_none)  # retrieval changed the prompt
    assert all("[focus-rule] Bright foci: A sharply marginated bright focus" in t for t in texts_kb)
    assert not any("Dental caries" in t for t in texts_kb)  # no shared term: not retrieved
    assert all("Retrieved knowledge" in t and t.rstrip().endswith("none\nWrite the knowledge lines only.")
               for t in texts_none)
    assert with_kb.kept
    for s in with_kb.kept:
        (know,) = [p for p in s.provenance if p.stage == "know"]
        assert "knowledge=focus-rule" in know.detail
