"""What an evaluator that waits 100 ms per call (a remote judge, a sandbox) costs a step of the engine.

Two runs of `run_job` on the bundled tiny-arith task, 64 rollouts per step (8 prompts x 8 completions), same
seed: one with the exact-match evaluator as is, one with the same evaluator sleeping 100 ms before answering.
The scores are the same, so both runs generate and train on exactly the same tokens; the difference in step
time is what the waiting costs. Done one call after another, it would add 6.4 s per step.

    .venv/bin/python bench/evaluator_overlap.py [--steps 6]

Last line: `evaluator_overhead_s: X`, the mean extra seconds per step in the rollout phase (generation plus the
wait for the last score: the update after it does the same work in both runs, so the step-time difference,
also printed, only adds noise). The first step, which also starts the worker processes the waits need, is
reported apart and left out of X. Also printed: the most evaluator worker processes each run had at once (the
pool grows for the waiting evaluator only; training keeps the cores busy, which must not make it grow for the
instant one) and the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
from pathlib import Path

from _common import ARITHMETIC_DIR, StepLog, arithmetic_rows, print_machine
from rftlab.engine.api import EvaluatorCode, JobInputs
from rftlab.engine.evaluator import WORKER_SCRIPT
from rftlab.engine.job import run_job
from rftlab.server.job_spec import settings_for

DELAY_S = 0.1
PROMPTS, K = 8, 8
SAMPLE_S = 0.5
SLOW_EVALUATOR = f"""
import time
from exact_match import evaluate as exact_match


def evaluate(messages, ground_truth=None, **kwargs):
    time.sleep({DELAY_S})
    return exact_match(messages, ground_truth=ground_truth, **kwargs)
"""


def evaluator_workers() -> int:
    """Evaluator worker processes running below this process (a sandboxed one sits below its launcher)."""
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat") as stat:
                    parents[int(entry.name)] = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue  # it ended meanwhile
    below, frontier = set(), {os.getpid()}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier}
        below |= frontier
    count = 0
    for pid in below:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                argv = cmdline.read().split(b"\0")
        except OSError:
            continue
        count += len(argv) > 3 and argv[3] == bytes(WORKER_SCRIPT)
    return count


class PeakWorkers:
    """The most evaluator worker processes at once while open, sampled every SAMPLE_S."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self.peak = max(self.peak, evaluator_workers())

    def __enter__(self) -> PeakWorkers:
        self._sampler.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._sampler.join()


def load_average() -> str:
    return " ".join(f"{load:.2f}" for load in os.getloadavg())


def run(evaluator: EvaluatorCode, rows: list[dict], folder: Path) -> tuple[list[dict[str, float]], int]:
    """The job's per-step metrics and the most evaluator worker processes it had at once."""
    job = {
        "trainingConfig": {"epochs": 1, "learningRate": 3e-4, "loraRank": 16, "batchSize": 4096},
        "inferenceParameters": {
            "temperature": 1.0,
            "topK": 0,
            "maxOutputTokens": 8,
            "responseCandidatesCount": K,
        },
        "lossConfig": {"method": "dapo"},
        "chunkSize": PROMPTS,
        "evalAutoCarveout": False,
    }
    inputs = JobInputs(
        settings=settings_for(job),
        train_rows=rows,
        eval_rows=None,
        evaluator=evaluator,
        base_model="tiny-arith",
        warm_start_adapter=None,
        checkpoint_dir=folder / "checkpoints",
        output_dir=folder / "adapter",
    )
    times = StepLog()
    with PeakWorkers() as workers:
        run_job(inputs, times)
    return times.steps, workers.peak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args(argv)
    print_machine()
    print(f"load average before: {load_average()}")
    rows = arithmetic_rows()[: args.steps * PROMPTS]
    with tempfile.TemporaryDirectory(prefix="bench-evaluator-") as folder:
        slow_root = Path(folder) / "slow"
        slow_root.mkdir()
        (slow_root / "slow_match.py").write_text(SLOW_EVALUATOR)
        (slow_root / "exact_match.py").write_text((ARITHMETIC_DIR / "exact_match.py").read_text())
        exact_match = EvaluatorCode(ARITHMETIC_DIR, "exact_match.py", "evaluate")
        instant, instant_workers = run(exact_match, rows, Path(folder) / "a")
        slow, slow_workers = run(
            EvaluatorCode(slow_root, "slow_match.py", "evaluate"), rows, Path(folder) / "b"
        )
    same_rewards = [m["reward_mean"] for m in instant] == [m["reward_mean"] for m in slow]
    print(f"{args.steps} steps of {PROMPTS * K} rollouts; same reward series in both runs: {same_rewards}")
    print(f"evaluator worker processes at most: instant {instant_workers}, slow {slow_workers}")
    print(f"load average after: {load_average()}")
    print(
        "step  instant s  (gen / eval / update)    slow s  (gen / eval / update)   extra: step s, rollout s"
    )
    extra_step, extra_rollout = [], []
    for number, (a, b) in enumerate(zip(instant, slow, strict=True), start=1):
        extra_step.append(b["step_seconds"] - a["step_seconds"])
        extra_rollout.append(b["gen_seconds"] + b["eval_seconds"] - a["gen_seconds"] - a["eval_seconds"])
        print(
            f"{number:>4}  {a['step_seconds']:9.2f}  ({a['gen_seconds']:.2f} / {a['eval_seconds']:.2f} / "
            f"{a['update_seconds']:.2f})  {b['step_seconds']:8.2f}  ({b['gen_seconds']:.2f} / "
            f"{b['eval_seconds']:.2f} / {b['update_seconds']:.2f})  {extra_step[-1]:+7.2f}  {extra_rollout[-1]:+7.2f}"
        )
    steady_step, steady_rollout = extra_step[1:] or extra_step, extra_rollout[1:] or extra_rollout
    print(
        f"first step: {extra_rollout[0]:+.2f} s (it also starts the evaluator worker processes the waits need); "
        f"later steps: step time {statistics.mean(steady_step):+.3f} s (mean), rollout phase "
        f"(generation + evaluation, the only work the evaluator touches) {statistics.mean(steady_rollout):+.3f} s "
        f"(mean), {statistics.median(steady_rollout):+.3f} s (median); one call after another: "
        f"{PROMPTS * K * DELAY_S:.1f} s"
    )
    print(f"evaluator_overhead_s: {statistics.mean(steady_rollout):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
