"""The second attempt at evaluation (``eval.retry=answer_key``): the training loop's conversation, SCoRe's metrics."""

from __future__ import annotations

import json
import warnings

import pytest

from medsage.eval.benchmarks.base import SplitSizeWarning
from medsage.eval.prompting import ChatRequest, Part
from medsage.eval.retry import CHECK_OPEN, retry_request, revised, score_retries
from medsage.prompts import SELF_CHECK_REQUEST
from medsage.recipes import compose

TRAJ = "<CONCLUSION>done</CONCLUSION><ANSWER>{}</ANSWER>"


def _row(i: str, answer: str, prediction: str, kind: str) -> dict:
    return {"benchmark": "b", "id": i, "question": "Is there a lesion?", "answer": answer, "answer_type": "closed",
            "options": None, "question_kind": kind, "prediction": prediction}


def test_the_retry_conversation_is_the_training_loops(tiny_model_dir):
    from transformers import AutoProcessor

    from medsage.eval.backends.hf import chat_messages

    first = ChatRequest("x", (Part("image", "a.png"), Part("text", "Is there a lesion?")))
    second = retry_request(first, "tau one", SELF_CHECK_REQUEST)
    messages = chat_messages(second)
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[1]["content"][0]["text"] == "tau one" and messages[2]["content"][0]["text"] == SELF_CHECK_REQUEST
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) + second.reply_prefix
    # the reply is opened for the model, as the RL loop's context tokens open it: the model writes from the check on
    assert text.endswith("<|im_start|>assistant\n" + CHECK_OPEN)
    assert text.index("tau one") < text.index(SELF_CHECK_REQUEST)


def test_self_correction_metrics_count_each_transition(tmp_path):
    rows = {"1": _row("1", "yes", TRAJ.format("no"), "presence"),     # wrong, corrected
            "2": _row("2", "yes", TRAJ.format("no"), "presence"),     # wrong, still wrong
            "3": _row("3", "no", TRAJ.format("no"), "count"),         # right at once: never retried
            "4": _row("4", "no", TRAJ.format("yes"), "count")}        # wrong, the check never closed
    first = [{"id": i, "correct": i == "3"} for i in rows]
    predictions = tmp_path / "b" / "predictions.jsonl"
    predictions.parent.mkdir()
    retries = {"1": "look again</CHECK>" + TRAJ.format("yes"), "2": "hm</CHECK>" + TRAJ.format("no"),
               "4": "the check goes on " + TRAJ.format("no")}
    (predictions.parent / "predictions.retry.jsonl").write_text(
        "".join(json.dumps({"id": i, "retry": t}) + "\n" for i, t in retries.items()))
    block = score_retries(predictions, first, rows)
    assert block["trigger"] == "answer_key" and block["retried"] == 3 and block["wrong_not_retried"] == 0
    assert (block["acc_t1"], block["acc_t2"], block["delta_i_to_c"], block["delta_c_to_i"]) == (25.0, 50.0, 25.0, 0.0)
    assert block["by_kind"]["presence"] == {"n": 2, "acc_t1": 0.0, "acc_t2": 50.0, "delta_i_to_c": 50.0,
                                            "delta_c_to_i": 0.0}
    verdicts = {v["id"]: v for v in map(json.loads, (predictions.parent / "predictions.retry_verdicts.jsonl")
                                        .read_text().splitlines())}
    assert set(verdicts) == {"1", "2", "4"} and verdicts["1"]["correct"] and not verdicts["2"]["correct"]
    assert "never closed" in verdicts["4"]["reason"]  # its "no" would be right, but only τ2 after </CHECK> counts
    assert revised("c</CHECK>rest") == "rest" and revised("no close") is None


def test_a_backend_that_cannot_continue_a_reply_is_refused(layouts, tmp_path):
    from medsage.config import ConfigError
    from medsage.eval.run import evaluate

    root = tmp_path / "data"
    layouts.make_vqa_rad_original(root / "vqa_rad", n_test=1, n_train=0)
    args = ["model=tiny", "model.path=served-name", f"eval.data_root={root}", f"eval.output_dir={tmp_path}/out",
            "eval/backend=openai", "eval.backend.base_url=http://127.0.0.1:9/v1", "eval/benchmarks=paper_five",
            "~eval.benchmarks.slake", "~eval.benchmarks.pathvqa", "~eval.benchmarks.pmc_vqa",
            "~eval.benchmarks.mmmu_med", "eval.retry=answer_key"]
    with warnings.catch_warnings(), pytest.raises(ConfigError, match="cannot continue a reply"):
        warnings.simplefilter("ignore", SplitSizeWarning)
        evaluate(compose("eval", args))
    with pytest.raises(ConfigError, match="eval.retry='oracle'"):
        evaluate(compose("eval", [*args[:-1], "eval.retry=oracle"]))


@pytest.mark.slow
def test_answer_key_retry_runs_resumes_and_reports(tiny_model_dir, layouts, tmp_path):
    from medsage.eval.run import evaluate

    root = tmp_path / "data"
    layouts.make_vqa_rad_original(root / "vqa_rad", n_test=3, n_train=0)
    out = tmp_path / "run"
    args = ["model=tiny", f"model.path={tiny_model_dir}", f"eval.data_root={root}", f"eval.output_dir={out}",
            f"eval.image_cache={tmp_path}/cache", "eval.generation.max_new_tokens=6", "eval/benchmarks=paper_five",
            "~eval.benchmarks.slake", "~eval.benchmarks.pathvqa", "~eval.benchmarks.pmc_vqa",
            "~eval.benchmarks.mmmu_med", "eval.retry=answer_key", "eval.batch_size=2"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SplitSizeWarning)
        block = evaluate(compose("eval", args))["vqa_rad"]["self_correction"]
        retry_file = out / "vqa_rad" / "predictions.retry.jsonl"
        lines = retry_file.read_text().splitlines()
        wrong = 3 - json.loads((out / "run.json").read_text())["summaries"]["vqa_rad"]["correct"]
        assert block["retried"] == len(lines) == wrong > 0  # the random model is wrong: every wrong item retried
        assert block["acc_t1"] == json.loads((out / "run.json").read_text())["summaries"]["vqa_rad"]["accuracy"]
        again = evaluate(compose("eval", args))["vqa_rad"]["self_correction"]
    assert retry_file.read_text().splitlines() == lines and again == block  # a rerun generates nothing again
    summary = json.loads((out / "vqa_rad" / "predictions.summary.json").read_text())
    assert summary["vqa_rad"]["self_correction"] == block


def test_the_hf_backend_sees_images_within_the_model_recipes_pixel_bounds(tiny_model_dir, tmp_path):
    """SFT (LLaMA-Factory's image_max_pixels) and RL (the parquet's max_pixels) resize images to the model recipe's
    bounds; evaluation must show the model the same number of vision tokens, not the processor's own default."""
    from PIL import Image

    from medsage.eval.backends.base import GenerationConfig, make_backend

    image = tmp_path / "big.png"
    Image.new("RGB", (448, 448), (90, 90, 90)).save(image)
    cfg = compose("eval", ["model=tiny", f"model.path={tiny_model_dir}", "eval.data_root=x", "model.image_max_pixels=12544"])
    assert cfg.eval.backend.image_max_pixels == 12544 and cfg.eval.backend.image_min_pixels == cfg.model.image_min_pixels
    backend = make_backend(cfg.eval.backend, str(tiny_model_dir), GenerationConfig(max_new_tokens=1))
    grid = backend.processor.image_processor(images=[Image.open(image)], return_tensors="pt")["image_grid_thw"]
    assert int(grid.prod()) == 12544 // (14 * 14)  # 112 x 112 pixels: 64 patches (16 merged tokens), not 448 x 448's 1,024
