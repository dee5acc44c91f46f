"""Scoring throughput: items/s over N synthetic predictions (closed, open, choice; LVKC, fallbacks, junk).

    .venv/bin/python bench/bench_scoring.py            # 100k predictions
    .venv/bin/python bench/bench_scoring.py --n 20000

Prints items/s for score_item (extraction + matching + verdict) and for the whole file path
(read predictions -> verdicts + summary written atomically), and their ratio.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from medsage.eval.scoring import score_item, score_predictions

LVKC = ("<LOC>The region of interest is the right lower lobe {{\"box_2d\": [315, 742, 785, 968], \"label\": \"lesion\"}}"
        "</LOC><VISUAL>A well defined opacity.</VISUAL><KNOWLEDGE>Such opacities suggest a nodule.</KNOWLEDGE>"
        "<CON>The findings support the answer.</CON><ANSWER>{}</ANSWER>")
OPTIONS = {"A": "CT", "B": "MRI", "C": "X-ray", "D": "Ultrasound"}


def synthetic(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        kind = ("closed", "open", "choice")[i % 3]
        if kind == "closed":
            answer, said = rng.choice(["yes", "no"]), rng.choice(["Yes", "No", "normal", "not present", "yes and no"])
            row = {"answer": answer, "answer_type": "closed"}
        elif kind == "open":
            answer, said = "left lung", rng.choice(["left lung", "the lung", "right kidney", "Left Lung."])
            row = {"answer": answer, "answer_type": "open"}
        else:
            said = rng.choice(["B", "(C)", "MRI", "A or B", "option D"])
            row = {"answer": rng.choice("ABCD"), "answer_type": "choice", "options": OPTIONS}
        style = rng.random()
        pred = LVKC.format(said) if style < 0.8 else f"Reasoning...\nAnswer: {said}" if style < 0.95 else ""
        rows.append({"benchmark": "synthetic", "id": str(i), "question": "q", "prediction": pred, **row})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    args = parser.parse_args()
    rows = synthetic(args.n)
    began = time.perf_counter()
    verdicts = [score_item(r) for r in rows]
    item_s = time.perf_counter() - began
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "predictions.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        began = time.perf_counter()
        _, _, summary = score_predictions(path)
        file_s = time.perf_counter() - began
    s = summary["synthetic"]
    print(f"predictions          {args.n}")
    print(f"score_item           {args.n / item_s:,.0f} items/s ({item_s:.2f} s)")
    print(f"score file (io+sum)  {args.n / file_s:,.0f} items/s ({file_s:.2f} s)")
    print(f"ratio file/item      {item_s / file_s:.2f}")
    print(f"check: accuracy {s['accuracy']}%, unparsed {s['unparsed']}, verdicts {len(verdicts)}")


if __name__ == "__main__":
    main()
