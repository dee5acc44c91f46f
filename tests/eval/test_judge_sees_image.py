"""The GPT-score judge rates localization, so it is sent the image and the response's <LOC> regions
drawn on it (by default), through the real openai client.

The server is the scripted loopback server of tests/helpers: a real judge model cannot show us the
request it received, and what the judge sent is exactly what this test checks."""

from __future__ import annotations

import base64
import io

import synth_server as H  # tests/helpers (pytest pythonpath)
from PIL import Image

from medsage.eval.judge import JudgeConfig, cache_key, judge_items
from medsage.scaffold import render

DIMS = ("localization", "visual_analysis", "knowledge", "reasoning")
REPLY = '{"localization": 4, "visual_analysis": 3, "knowledge": 5, "reasoning": 2}'


def _decode(url: str) -> Image.Image:
    assert url.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")


def test_judge_is_sent_the_image_and_the_drawn_regions(tmp_path):
    image = tmp_path / "ct.png"
    Image.new("RGB", (200, 100), (40, 40, 40)).save(image)
    boxed = render('{"box_2d": [200, 100, 800, 500], "label": "lesion"}', "v", "k", "c", "yes")
    text_roi = render("the left lower lobe", "v", "k", "c", "yes")
    items = [{"id": "1", "benchmark": "vqa_rad", "question": "Lesion?", "answer": "yes", "prediction": boxed,
              "images": [str(image)]},
             {"id": "2", "benchmark": "vqa_rad", "question": "Lesion?", "answer": "yes", "prediction": text_roi,
              "images": [str(image)]}]
    cfg = JudgeConfig(base_url="", model="judge", rubric="Q: {question}\n{prediction}", dimensions=DIMS,
                      concurrency=1)
    with H.LoopbackServer(lambda body, headers: (200, H.completion(REPLY), 0.0)) as server:
        verdicts = judge_items(items, JudgeConfig(**{**cfg.__dict__, "base_url": server.base_url}))
    assert [v["scores"]["localization"] for v in verdicts] == [4.0, 4.0]

    def sent(prediction):
        (request,) = [r for r in server.requests
                      if any(p["type"] == "text" and prediction in p["text"] for p in r["messages"][0]["content"])]
        return request["messages"][0]["content"]

    boxed_parts = sent(boxed)
    urls = [p["image_url"]["url"] for p in boxed_parts if p["type"] == "image_url"]
    assert len(urls) == 2  # the image, then the image with the <LOC> box drawn
    assert "drawn in red" in boxed_parts[-1]["text"]
    plain, drawn = _decode(urls[0]), _decode(urls[1])
    assert plain.size == drawn.size == (200, 100) and plain.getpixel((60, 50)) == (40, 40, 40)
    # box_2d [y1, x1, y2, x2] on the 0-1000 grid -> x 20..100, y 20..80 pixels: its edge is red, its inside is not
    assert drawn.getpixel((20, 50)) == (255, 0, 0) and drawn.getpixel((60, 50)) == (40, 40, 40)
    assert sum(p["type"] == "image_url" for p in sent(text_roi)) == 1  # a textual region: nothing to draw

    off = JudgeConfig(**{**cfg.__dict__, "send_image": False})
    assert cache_key(off, items[0]) != cache_key(cfg, items[0])  # a text-only verdict is not reused
