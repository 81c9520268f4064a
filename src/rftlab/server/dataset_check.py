"""Validation of an uploaded RFT dataset: JSONL, one row per line, each with chat `messages`, within the server's
limits on line length, line count and nesting."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rftlab.server.limits import ServerLimits, flag

KNOWN_ROLES = ("system", "user", "assistant", "tool", "developer")
MAX_REPORTED_PROBLEMS = 20
DEFAULT_LIMITS = ServerLimits()


@dataclass
class DatasetReport:
    example_count: int = 0
    problems: list[tuple[int, str]] = field(default_factory=list)
    problem_count: int = 0

    def summary(self) -> str:
        shown = "; ".join(f"line {line}: {why}" for line, why in self.problems)
        more = self.problem_count - len(self.problems)
        return f"{self.problem_count} invalid line(s): {shown}" + (f"; and {more} more" if more > 0 else "")


def row_problem(row: object) -> str | None:
    """Why a parsed line is not a usable row, or None."""
    if not isinstance(row, dict):
        return f"expected a JSON object, got {type(row).__name__}"
    messages = row.get("messages")
    if messages is None:
        return "missing required field 'messages'"
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty list of {role, content} objects"
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            return f"messages[{index}] must be an object with 'role' and 'content'"
        role = message.get("role")
        if role not in KNOWN_ROLES:
            return f"messages[{index}].role is {role!r}; expected one of {', '.join(KNOWN_ROLES)}"
        if "content" not in message:
            return f"messages[{index}] has no 'content'"
        content = message["content"]
        if not (isinstance(content, (str, list)) or (content is None and role == "assistant")):
            return f"messages[{index}].content must be a string or a list of content parts"
    return None


def nesting_depth(value: object, deeper_than: int) -> bool:
    """Whether `value` nests lists and objects more than `deeper_than` levels (without recursion)."""
    level = [value]
    for _ in range(deeper_than + 1):
        level = [
            child
            for item in level
            if isinstance(item, (dict, list))
            for child in (item.values() if isinstance(item, dict) else item)
        ]
        if not level:
            return False
    return True


def _lines(path: Path, max_bytes: int) -> Iterator[tuple[int, bytes | None]]:
    """(line number, line) for each line, the line None when it is longer than `max_bytes` (read past, never held
    in memory whole)."""
    with path.open("rb") as lines:
        number = 0
        while True:
            raw = lines.readline(max_bytes + 1)
            if not raw:
                return
            number += 1
            if len(raw) > max_bytes and not raw.endswith(b"\n"):
                while raw and not raw.endswith(b"\n"):
                    raw = lines.readline(1 << 20)
                yield number, None
                continue
            yield number, raw


def check_dataset_file(path: Path, limits: ServerLimits = DEFAULT_LIMITS) -> DatasetReport:
    report = DatasetReport()
    for number, raw in _lines(path, limits.row_bytes):
        if raw is not None and not raw.strip():
            continue
        if report.example_count + report.problem_count >= limits.max_rows:
            report.problem_count += 1
            report.problems.append(
                (number, f"more than {limits.max_rows:,} rows, this server's limit ({flag('max_rows')})")
            )
            break
        problem = _line_problem(raw, limits)
        if problem is None:
            report.example_count += 1
            continue
        report.problem_count += 1
        if len(report.problems) < MAX_REPORTED_PROBLEMS:
            report.problems.append((number, problem))
    return report


def _line_problem(raw: bytes | None, limits: ServerLimits) -> str | None:
    if raw is None:
        return f"longer than {limits.row_bytes:,} bytes, this server's limit ({flag('max_row_kb')})"
    too_deep = (
        f"nested more than {limits.max_row_depth} levels deep, this server's limit ({flag('max_row_depth')})"
    )
    try:
        row = json.loads(raw)
    except RecursionError:
        return too_deep
    except ValueError as error:  # not JSON, not UTF-8, or an integer Python will not parse
        if "integer string conversion" in str(error):
            return "holds an integer of more than 4300 digits"
        return f"invalid JSON ({error})"
    if nesting_depth(row, limits.max_row_depth):
        return too_deep
    return row_problem(row)


def read_rows(path: Path) -> list[dict]:
    with path.open("rb") as lines:
        return [json.loads(raw) for raw in lines if raw.strip()]
