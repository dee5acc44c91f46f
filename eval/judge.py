"""GPT-score judge (Table 2): 1-5 scores for localization, visual analysis, knowledge and reasoning.

Any OpenAI-compatible judge; the rubric and the dimensions live in the recipe
(``recipes/eval/judge/gpt_score.yaml``). Replies are parsed robustly (a JSON object anywhere in the
reply, or ``Name: n`` lines); a reply that yields no score for some dimension is recorded as
unparsed with the reply kept, never guessed. Verdicts are cached (JSON lines keyed by a hash of the
judge model, rubric, item and output), so a rerun only asks for what is new.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

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

    @classmethod
    def from_cfg(cls, cfg) -> "JudgeConfig":
        """The ``eval.judge`` section, typed (``medsage.config.typed``)."""
        from medsage.config import typed

        return typed(cls, cfg, "recipes/eval/judge", prefix="eval.judge.")


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
    blob = json.dumps([cfg.model, cfg.rubric, item.get("question"), item.get("answer"), item.get("prediction")],
                      ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def _load_cache(path: Path | None) -> dict[str, dict]:
    if path is None or not path.exists():
        return {}
    from medsage.eval.scoring import read_predictions

    return {r["key"]: r for r in read_predictions(path, repair=True) if "key" in r}


def judge_items(items: list[dict], cfg: JudgeConfig, client=None) -> list[dict]:
    """One judge verdict per item (``question``, ``answer``, ``prediction``, ``id``); cached."""
    from tqdm import tqdm

    from medsage.io import append_jsonl

    cache_path = Path(cfg.cache) if cfg.cache else None
    cache = _load_cache(cache_path)
    if client is None:
        from openai import OpenAI

        client = OpenAI(base_url=cfg.base_url, api_key=os.environ.get(cfg.api_key_env) or "EMPTY", max_retries=3)

    def ask(item: dict) -> dict:
        prompt = cfg.rubric.format(question=item.get("question", ""), answer=item.get("answer", ""),
                                   prediction=item.get("prediction") or "")
        reply = client.chat.completions.create(model=cfg.model, messages=[{"role": "user", "content": prompt}],
                                               max_tokens=cfg.max_tokens, temperature=cfg.temperature)
        text = reply.choices[0].message.content or ""
        scores, missing = parse_scores(text, cfg.dimensions)
        return {"key": cache_key(cfg, item), "id": item.get("id"), "benchmark": item.get("benchmark"),
                "scores": scores, "unparsed": missing, "reply": text}

    todo = [it for it in items if cache_key(cfg, it) not in cache]
    if todo:
        if cache_path:
            cache_path.parent.mkdir(parents=True, exist_ok=True)
        with ThreadPoolExecutor(max_workers=max(1, cfg.concurrency)) as pool, \
                tqdm(total=len(todo), desc="judge", unit="item") as bar:
            fh = cache_path.open("a", encoding="utf-8") if cache_path else None
            try:
                for verdict in pool.map(ask, todo):
                    cache[verdict["key"]] = verdict
                    if fh:  # appended as it arrives: an interrupted judging run keeps what it paid for
                        append_jsonl(fh, [verdict])
                    bar.update(1)
            finally:
                if fh:
                    fh.close()
    return [{**cache[cache_key(cfg, it)], "id": it.get("id"), "benchmark": it.get("benchmark")} for it in items]


def summarize_judgements(verdicts: list[dict], dimensions: tuple[str, ...]) -> dict:
    """Mean score per dimension over the items where it was read; unparsed counts shown beside."""
    out: dict = {"n": len(verdicts), "dimensions": {}}
    for d in dimensions:
        vals = [v["scores"][d] for v in verdicts if d in v["scores"]]
        out["dimensions"][d] = {"mean": round(sum(vals) / len(vals), 3) if vals else None, "scored": len(vals),
                                "unparsed": len(verdicts) - len(vals)}
    means = [x["mean"] for x in out["dimensions"].values() if x["mean"] is not None]
    out["average"] = round(sum(means) / len(means), 3) if len(means) == len(dimensions) else None
    return out
