"""What the evaluator sandbox costs: worker start and evaluator calls, sandboxed against unconfined.

The bundled exact-match evaluator through `EvaluatorPool`, once with the default `SandboxPolicy` (Landlock, user,
network and PID namespaces, rlimits, scratch HOME: a launcher process per worker) and once with `sandbox=None`
(the worker started directly, as before the sandbox). Rounds alternate between the two so that drift in the
machine's load hits both alike.

    .venv/bin/python bench/sandbox_overhead.py [--rounds 10] [--calls 400]

Printed per side: median worker start (pool of one worker, until it has imported the evaluator), median call
round trip (one call at a time), median time for a batch of 64 calls through 8 workers (as a training step
scores), and each as a ratio sandboxed / unconfined. Last line: `sandbox_overhead: start X, call Y, batch Z`.
"""

from __future__ import annotations

import argparse
import statistics
import time

from _common import EXACT_MATCH, arithmetic_rows, print_machine
from rftlab.engine.evaluator import DEFAULT_SANDBOX, EvaluatorPool
from rftlab.sandbox import SandboxPolicy, capabilities

BATCH, BATCH_WORKERS = 64, 8
SIDES: dict[str, SandboxPolicy | None] = {"sandboxed": DEFAULT_SANDBOX, "unconfined": None}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--calls", type=int, default=400, help="one-at-a-time calls per round")
    return parser.parse_args(argv)


def conversations(count: int) -> list[tuple[list[dict], str]]:
    rows = arithmetic_rows()
    return [
        (
            [*rows[i % len(rows)]["messages"], {"role": "assistant", "content": "85"}],
            rows[i % len(rows)]["ground_truth"],
        )
        for i in range(count)
    ]


def worker_start_s(policy: SandboxPolicy | None) -> float:
    started = time.perf_counter()
    pool = EvaluatorPool(EXACT_MATCH, 1, 10, sandbox=policy)
    elapsed = time.perf_counter() - started
    pool.close()
    return elapsed


def call_s(policy: SandboxPolicy | None, calls: int) -> float:
    work = conversations(calls)
    with EvaluatorPool(EXACT_MATCH, 1, 10, sandbox=policy) as pool:
        pool.submit(*work[0], {}).result()  # warm
        started = time.perf_counter()
        for messages, truth in work:
            assert pool.submit(messages, truth, {}).result().valid
        return (time.perf_counter() - started) / calls


def batch_s(policy: SandboxPolicy | None, batches: int = 20) -> float:
    work = conversations(BATCH)
    with EvaluatorPool(EXACT_MATCH, BATCH_WORKERS, 10, sandbox=policy) as pool:
        [f.result() for f in [pool.submit(m, t, {}) for m, t in work]]  # warm
        times = []
        for _ in range(batches):
            started = time.perf_counter()
            scores = [future.result() for future in [pool.submit(m, t, {}) for m, t in work]]
            times.append(time.perf_counter() - started)
            assert all(score.valid for score in scores)
        return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    print_machine()
    print(capabilities().describe())
    measured: dict[str, dict[str, list[float]]] = {
        side: {"start": [], "call": [], "batch": []} for side in SIDES
    }
    for _ in range(args.rounds):
        for side, policy in SIDES.items():
            measured[side]["start"].append(worker_start_s(policy))
            measured[side]["call"].append(call_s(policy, args.calls))
            measured[side]["batch"].append(batch_s(policy))
    medians = {side: {k: statistics.median(v) for k, v in m.items()} for side, m in measured.items()}
    for side, m in medians.items():
        print(
            f"{side:>10}: worker start {m['start'] * 1e3:7.1f} ms, call {m['call'] * 1e6:7.0f} us, "
            f"batch of {BATCH} through {BATCH_WORKERS} workers {m['batch'] * 1e3:6.2f} ms"
        )
    ratio = {k: medians["sandboxed"][k] / medians["unconfined"][k] for k in ("start", "call", "batch")}
    print(
        f"sandbox_overhead: start {ratio['start']:.2f}, call {ratio['call']:.2f}, batch {ratio['batch']:.2f}"
    )


if __name__ == "__main__":
    main()
