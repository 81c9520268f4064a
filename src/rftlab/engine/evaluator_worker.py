"""One evaluator worker process: imports the user's evaluator once, then scores calls read from stdin.

Run by path (`python evaluator_worker.py ROOT ENTRY_FILE ENTRY_FUNC`), so it imports nothing of rftlab and
starts fast. Protocol: JSON lines. The worker first answers `{"ready": true}` (or `{"ready": false, "error"}`),
then one line per call: `{"messages", "ground_truth", "fields"}` -> `{"ok": true, "result": {...}}` or
`{"ok": false, "error"}`. The evaluator's own prints go to stderr, so they cannot corrupt the protocol.
"""

from __future__ import annotations

import importlib.util
import json
import numbers
import os
import sys
import traceback
from pathlib import Path
from typing import Any

RESULT_SHAPES = "a float, a dict with 'score', or an object with a 'score' attribute (EvaluateResult)"


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
    send({"ready": True})
    for line in sys.stdin:
        call = json.loads(line)
        try:
            result = function(call["messages"], ground_truth=call["ground_truth"], **call["fields"])
            send({"ok": True, "result": normalize(result)})
        except Exception as error:
            send({"ok": False, "error": describe_error(error)})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
