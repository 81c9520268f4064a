"""eval-protocol `@evaluation_test` entries as rftlab evaluators.

An entry such as `test_math.py::test_math` is an eval-protocol pytest function: called directly with one
`EvaluationRow` it scores that row (setting `row.evaluation_result`) and returns it; the decorated function is
async. `as_evaluator(function)` turns such a function into rftlab's calling convention, `evaluate(messages,
ground_truth=None, **row_fields) -> EvaluateResult`, and leaves any other function as it is.

The row handed to the test is the dataset row as eval-protocol wrote it (`input_metadata`, `tools`, ... arrive as
the row's other fields) with `messages` ending in the sampled reply. Only `mode="pointwise"` tests can score one
rollout at a time. Standard library only at import (eval_protocol is imported only for an eval-protocol entry), so
the evaluator worker can import this module by path on any evaluator's interpreter.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any


def is_evaluation_test(function: Any) -> bool:
    return hasattr(function, "__ep_params__") and hasattr(function, "_origin_func")


def as_evaluator(function: Callable[..., Any]) -> Callable[..., Any]:
    if not is_evaluation_test(function):
        return function
    from eval_protocol.models import EvaluationRow

    mode = getattr(function, "_metainfo", {}).get("mode", "pointwise")
    if mode != "pointwise":
        raise TypeError(
            f"@evaluation_test {function.__name__} has mode={mode!r}; rftlab scores one rollout at a time, "
            "so the entry must use mode='pointwise'"
        )
    loop = asyncio.new_event_loop()

    def evaluate(messages: list[dict[str, Any]], ground_truth: Any = None, **fields: Any) -> Any:
        row = EvaluationRow(
            **{key: value for key, value in fields.items() if key != "evaluation_result"},
            messages=messages,
            ground_truth=ground_truth,
        )
        returned = function(row)
        if inspect.isawaitable(returned):
            returned = loop.run_until_complete(returned)
        scored = returned if isinstance(returned, EvaluationRow) else row
        if scored.evaluation_result is None:
            raise ValueError(f"{function.__name__} returned the row without setting row.evaluation_result")
        return scored.evaluation_result

    return evaluate
