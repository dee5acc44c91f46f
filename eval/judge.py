"""GPT-score judge (Table 2): 1-5 scores for localization, visual analysis, knowledge and reasoning.

Any OpenAI-compatible judge; the rubric and the dimensions live in the recipe
(``recipes/eval/judge/gpt_score.yaml``). The judge sees what it rates: the item's image(s) and, for
localization, the first image again with the regions the response's ``<LOC>`` names drawn on it
(``send_image`` / ``draw_regions``, both on by default; a text-only judge can turn them off).
Replies are parsed robustly (a JSON object anywhere in the reply, or ``Name: n`` lines); a reply
that yields no score for some dimension is recorded as unparsed with the reply kept, never guessed. Verdicts are cached (JSON lines keyed by a hash of the
judge model, rubric, item and output), so a rerun only asks for what is new.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

from medsage.chat import FATAL, CallError, ChatClient, ClientConfig, Image, Message, redact, refuse_keys

_NUMBER = r"([1-5](?:\.\d+)?)(?![\d.])"  # "45" is not a 4


@dataclass
class JudgeConfig:
    base_url: str
    model: str
    rubric: str
    dimensions: list[str]
    api_key_env: str = "OPENAI_API_KEY"
    max_tokens: int = 512
    temperature: float = 0.0
    concurrency: int = 4
    cache: str | None = None
    timeout_s: float = 120.0  # per request
    max_retries: int = 4  # extra attempts after a 429, 5xx, timeout or malformed reply (medsage.chat's policy)
    send_image: bool = True     # the item's images go to the judge with the rubric
    draw_regions: bool = True   # plus the first image with the response's <LOC> boxes/points drawn on it

    @classmethod
    def from_cfg(cls, cfg) -> "JudgeConfig":
        """The ``eval.judge`` section, typed (``medsage.config.typed``); a key written in it is refused."""
        from medsage.config import typed

        refuse_keys(cfg, "eval.judge")
        return typed(cls, cfg, "recipes/eval/judge", prefix="eval.judge.")

    def client(self) -> ClientConfig:
        return ClientConfig(base_url=self.base_url, model=self.model, api_key_env=self.api_key_env,
                            concurrency=self.concurrency, max_retries=self.max_retries, timeout_s=self.timeout_s,
                            temperature=self.temperature, max_tokens=self.max_tokens)


def parse_scores(reply: str, dimensions: tuple[str, ...]) -> tuple[dict[str, float], list[str]]:
    """Scores found in a judge reply and the dimensions that could not be read."""
    scores: dict[str, float] = {}
    decoder = json.JSONDecoder()
    pos = 0
    while (start := reply.find("{", pos)) != -1:  # the first JSON object holding any dimension wins
        try:
            obj, end = decoder.raw_decode(reply, start)
        except json.JSONDecodeError:
            pos = start + 1
            continue
        pos = end
        if isinstance(obj, dict):
            keyed = {_key(k): v for k, v in obj.items()}
            found = {d: keyed[_key(d)] for d in dimensions if _key(d) in keyed}
            for d, v in found.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and 1 <= v <= 5:
                    scores[d] = float(v)
                elif isinstance(v, str) and re.fullmatch(_NUMBER, v.strip()):
                    scores[d] = float(v)
            if found:
                break
    for d in dimensions:  # "Visual analysis: 4/5" lines for what JSON did not give
        if d in scores:
            continue
        name = r"[\s_\-]*".join(map(re.escape, re.split(r"[_\s]+", d)))
        if m := re.search(rf"\b{name}\b\W{{0,4}}\s*[:=\-]?\s*\**\s*{_NUMBER}(?:\s*/\s*5)?", reply, re.IGNORECASE):
            scores[d] = float(m.group(1))
    return scores, [d for d in dimensions if d not in scores]


def _key(name: str) -> str:
    return re.sub(r"[^a-z]", "", str(name).lower())


def cache_key(cfg: JudgeConfig, item: dict) -> str:
    blob = json.dumps([cfg.model, cfg.rubric, item.get("question"), item.get("answer"), item.get("prediction"),
                       *([item.get("images") or [], cfg.draw_regions] if cfg.send_image else [])], ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def draw_regions(image_path: str, prediction: str) -> Image | None:
    """The image with the regions the response's (final) ``<LOC>`` names drawn on it in red, as PNG,
    or None when it names none. Coordinates are the scaffold's 0-1000 grid (``Region.to_pixels``)."""
    from PIL import ImageDraw

    from medsage.images import open_image
    from medsage.plugins.rewards import final_trajectory
    from medsage.scaffold import parse_lenient

    regions, _ = parse_lenient(final_trajectory(prediction or "")).regions()
    if not regions:
        return None
    with open_image(image_path) as opened:
        img = opened.convert("RGB")
    draw = ImageDraw.Draw(img)
    width = max(2, round(min(img.size) / 150))
    for r in regions:
        px = r.to_pixels(*img.size)  # image order: (x1, y1, x2, y2) or (x, y)
        if r.kind == "box":
            draw.rectangle(list(px), outline=(255, 0, 0), width=width)
            anchor = (px[0] + width, px[1] + width)
        else:
            x, y = px
            draw.ellipse([x - 3 * width, y - 3 * width, x + 3 * width, y + 3 * width], outline=(255, 0, 0), width=width)
            anchor = (x + 4 * width, y)
        if r.label:
            draw.text(anchor, r.label, fill=(255, 0, 0))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return Image(buf.getvalue(), "image/png")


def judge_message(cfg: JudgeConfig, item: dict) -> Message:
    """The judge's message for one item: the rubric, the item's images and, after them, the first image
    with the drawn ``<LOC>`` regions (the rubric says so)."""
    prompt = cfg.rubric.format(question=item.get("question", ""), answer=item.get("answer", ""),
                               prediction=item.get("prediction") or "")
    paths = list(item.get("images") or []) if cfg.send_image else []
    images = [Image.from_path(p) for p in paths]
    drawn = draw_regions(paths[0], item.get("prediction") or "") if paths and cfg.draw_regions else None
    if drawn is not None:
        images.append(drawn)
        prompt += ("\nThe last image is the first one again, with the regions the response's <LOC> names "
                   "drawn in red.")
    return Message("user", prompt, tuple(images))


def _load_cache(path: Path | None) -> dict[str, dict]:
    if path is None or not path.exists():
        return {}
    from medsage.eval.scoring import read_predictions

    return {r["key"]: r for r in read_predictions(path, repair=True) if "key" in r}


def judge_items(items: list[dict], cfg: JudgeConfig, client: ChatClient | None = None) -> list[dict]:
    """One judge verdict per item (``question``, ``answer``, ``prediction``, ``id``); cached.

    An item whose request fails for good (after ``max_retries``) gets a verdict with ``error`` (reason
    and redacted detail) and no scores, and is not cached, so a rerun asks again; the run goes on.
    Failures no other item can avoid (wrong key, unknown model) stop the run."""
    from tqdm import tqdm

    from medsage.io import append_jsonl

    cache_path = Path(cfg.cache) if cfg.cache else None
    cache = _load_cache(cache_path)
    client = client or ChatClient(cfg.client())
    failed: dict[str, dict] = {}

    async def ask(item: dict) -> dict:
        verdict = {"key": cache_key(cfg, item), "id": item.get("id"), "benchmark": item.get("benchmark")}
        try:
            reply = await client.chat([judge_message(cfg, item)])
        except CallError as err:
            if err.reason in FATAL:
                raise
            return {**verdict, "scores": {}, "unparsed": list(cfg.dimensions), "reply": "",
                    "error": {"reason": err.reason, "detail": err.detail}}
        scores, missing = parse_scores(reply.text, cfg.dimensions)
        return {**verdict, "scores": scores, "unparsed": missing, "reply": redact(reply.text)}

    async def judge_all(_client) -> None:
        tasks = [asyncio.ensure_future(ask(it)) for it in todo]
        fh = cache_path.open("a", encoding="utf-8") if cache_path else None
        try:
            with tqdm(total=len(tasks), desc="judge", unit="item") as bar:
                for fut in asyncio.as_completed(tasks):
                    verdict = await fut
                    if "error" in verdict:
                        failed[verdict["key"]] = verdict
                    else:
                        cache[verdict["key"]] = verdict
                        if fh:  # appended as it arrives: an interrupted judging run keeps what it paid for
                            append_jsonl(fh, [verdict])
                    bar.update(1)
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        finally:
            if fh:
                fh.close()

    todo = list({cache_key(cfg, it): it for it in items if cache_key(cfg, it) not in cache}.values())
    if todo:
        if cache_path:
            cache_path.parent.mkdir(parents=True, exist_ok=True)
        client.run(judge_all)
    return [{**(cache.get(cache_key(cfg, it)) or failed[cache_key(cfg, it)]), "id": it.get("id"),
             "benchmark": it.get("benchmark")} for it in items]


def summarize_judgements(verdicts: list[dict], dimensions: tuple[str, ...]) -> dict:
    """Mean score per dimension over the items where it was read; unparsed counts shown beside."""
    out: dict = {"n": len(verdicts), "failed": sum("error" in v for v in verdicts), "dimensions": {}}
    for d in dimensions:
        vals = [v["scores"][d] for v in verdicts if d in v["scores"]]
        out["dimensions"][d] = {"mean": round(sum(vals) / len(vals), 3) if vals else None, "scored": len(vals),
                                "unparsed": len(verdicts) - len(vals)}
    means = [x["mean"] for x in out["dimensions"].values() if x["mean"] is not None]
    out["average"] = round(sum(means) / len(means), 3) if len(means) == len(dimensions) else None
    return out
