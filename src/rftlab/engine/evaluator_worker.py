"""One evaluator worker process: imports the user's evaluator once, then scores calls read from stdin.

Run by path (`python evaluator_worker.py ROOT ENTRY_FILE ENTRY_FUNC`), so it imports nothing of rftlab and
starts fast (the pool imports `CallTiming` from here: the one definition of what a worker measures). Protocol:
JSON lines. The worker first answers `{"ready": true}` (or `{"ready": false, "error"}`), then one line per call:
`{"messages", "ground_truth", "fields"}` -> `{"ok": true, "result": {...}, "timing": {...}}` or
`{"ok": false, "error", "timing"}`, where "timing" is a `CallTiming`. The evaluator's own prints go to stderr,
so they cannot corrupt the protocol.
"""

from __future__ import annotations

import importlib.util
import json
import math
import numbers
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

RESULT_SHAPES = "a float, a dict with 'score', or an object with a 'score' attribute (EvaluateResult)"
TIMING = "timing"
SCHEDSTAT = "/proc/thread-self/schedstat"
"""Nanoseconds on a core, then nanoseconds runnable but waiting for one, of the calling thread (Linux)."""


class CallTiming(NamedTuple):
    """What one call cost, measured inside the worker around the evaluator function."""

    wall_s: float
    cpu_s: float
    """CPU time of the worker process (all its threads) and of the child processes it waited for (theirs counted
    in clock ticks, 10 ms)."""
    runnable_s: float
    """Of wall_s, the time the calling thread was ready to run but waited for a core: the machine's contention,
    not the evaluator's doing. 0 where the kernel's schedstat cannot be read."""

    @property
    def waited_s(self) -> float:
        """Time off a core by the evaluator's own doing: sleeping, I/O, the network, a remote judge (and a child
        process's turns waiting for a core, which only the child's own schedstat could tell apart)."""
        return max(0.0, self.wall_s - self.runnable_s - self.cpu_s)

    @classmethod
    def from_wire(cls, value: Any) -> CallTiming | None:
        """The timing an answer line carries; None unless it holds exactly the fields, as finite numbers >= 0."""
        if not isinstance(value, dict) or set(value) != set(cls._fields):
            return None
        if not all(_is_seconds(seconds) for seconds in value.values()):
            return None
        return cls(**value)


def _is_seconds(value: Any) -> bool:
    return (
        isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
    )


class CallClock:
    """Reads the worker's clocks: a call's `CallTiming` is the difference of a reading before and after it."""

    def __init__(self) -> None:
        try:  # opened once, in the thread that runs the calls: a read then costs one pread
            self._schedstat: int | None = os.open(SCHEDSTAT, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            self._schedstat = None

    def reading(self) -> CallTiming:
        waited_for = os.times()  # the children's CPU time at a quarter of getrusage's cost
        cpu_s = time.process_time() + waited_for.children_user + waited_for.children_system
        return CallTiming(time.monotonic(), cpu_s, self._runnable_s())

    def since(self, start: CallTiming) -> CallTiming:
        return CallTiming(*(max(0.0, now - then) for now, then in zip(self.reading(), start, strict=True)))

    def _runnable_s(self) -> float:
        if self._schedstat is None:
            return 0.0
        try:
            return int(os.pread(self._schedstat, 128, 0).split()[1]) / 1e9
        except (OSError, ValueError, IndexError):
            return 0.0


def describe_error(error: BaseException) -> str:
    """The exception line plus where in the user's code it was raised."""
    message = "".join(traceback.format_exception_only(type(error), error)).strip()
    frames = traceback.extract_tb(error.__traceback__)
    if frames:
        last = frames[-1]
        message += f" (at {Path(last.filename).name}:{last.lineno} in {last.name})"
    return message


def load_entry(root: str, entry_file: str, entry_func: str):
    sys.path.insert(0, root)
    path = Path(root) / entry_file
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import evaluator file {entry_file!r}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    function = getattr(module, entry_func, None)
    if not callable(function):
        raise AttributeError(f"evaluator file {entry_file!r} defines no function {entry_func!r}")
    return function


def eval_protocol_adapter():
    """eval_protocol_entry.py, beside this script (loaded by path: the worker runs isolated, without rftlab)."""
    path = Path(__file__).with_name("eval_protocol_entry.py")
    spec = importlib.util.spec_from_file_location("rftlab_eval_protocol_entry", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def as_score(value: Any, what: str) -> float:
    if isinstance(value, numbers.Real):
        return float(value)
    raise TypeError(f"{what} is {type(value).__name__} {value!r}, expected a number")


def field(result: Any, name: str, default: Any = None) -> Any:
    if isinstance(result, dict):
        return result.get(name, default)
    return getattr(result, name, default)


def normalize(result: Any) -> dict[str, Any]:
    """Any accepted result shape -> {score, reason, is_score_valid, metrics: {name: float}}."""
    if isinstance(result, numbers.Real):
        return {"score": float(result), "reason": "", "is_score_valid": True, "metrics": {}}
    if isinstance(result, tuple) and len(result) == 2:  # reward-kit's legacy (score, {metric: score})
        result = {"score": result[0], "metrics": result[1]}
    has_score = "score" in result if isinstance(result, dict) else hasattr(result, "score")
    if not has_score:
        raise TypeError(f"evaluator returned {type(result).__name__}; expected {RESULT_SHAPES}")
    metrics = {}
    for name, metric in (field(result, "metrics") or {}).items():
        metric_score = metric if isinstance(metric, numbers.Real) else field(metric, "score")
        metrics[str(name)] = as_score(metric_score, f"metric {name!r}")
    return {
        "score": as_score(field(result, "score"), "score"),
        "reason": str(field(result, "reason") or ""),
        "is_score_valid": bool(field(result, "is_score_valid", True)),
        "metrics": metrics,
    }


def main(argv: list[str]) -> int:
    root, entry_file, entry_func = argv
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr

    def send(message: dict[str, Any]) -> None:
        protocol.write(json.dumps(message) + "\n")

    os.chdir(root)
    try:
        function = eval_protocol_adapter().as_evaluator(load_entry(root, entry_file, entry_func))
    except BaseException as error:
        send({"ready": False, "error": describe_error(error)})
        return 1
    clock = CallClock()
    send({"ready": True})
    for line in sys.stdin:
        call = json.loads(line)
        start = clock.reading()
        answer = score(function, call)
        send({**answer, TIMING: clock.since(start)._asdict()})
    return 0


def score(function: Callable[..., Any], call: dict[str, Any]) -> dict[str, Any]:
    try:
        result = function(call["messages"], ground_truth=call["ground_truth"], **call["fields"])
        return {"ok": True, "result": normalize(result)}
    except Exception as error:
        return {"ok": False, "error": describe_error(error)}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
