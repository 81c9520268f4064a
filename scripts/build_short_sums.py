"""Write the bundled short-sums task (src/rftlab/assets/short_sums/{train,eval}.jsonl): one-digit additions asked
in a few phrasings that each say to reply with the number only. A small instruct model knows most sums but
answers in a sentence; the `number_answer` evaluator gives full score to the bare number only, so reinforcement
fine-tuning has something to teach it in minutes. Deterministic: running it again writes the same files.

    .venv/bin/python scripts/build_short_sums.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

FOLDER = Path(__file__).resolve().parents[1] / "src" / "rftlab" / "assets" / "short_sums"
PHRASINGS = (
    "What is {a}+{b}? Reply with only the number.",
    "Compute {a} + {b}. Answer with just the number.",
    "{a} plus {b} equals what? Give only the number.",
    "Add {a} and {b}. Reply with the number alone.",
)
EVAL_ROWS = 64


def main() -> None:
    rows = [
        {"messages": [{"role": "user", "content": phrasing.format(a=a, b=b)}], "ground_truth": str(a + b)}
        for a in range(10)
        for b in range(10)
        for phrasing in PHRASINGS
    ]
    random.Random(0).shuffle(rows)
    for name, part in (("eval.jsonl", rows[:EVAL_ROWS]), ("train.jsonl", rows[EVAL_ROWS:])):
        (FOLDER / name).write_text("".join(json.dumps(row) + "\n" for row in part))


if __name__ == "__main__":
    main()
