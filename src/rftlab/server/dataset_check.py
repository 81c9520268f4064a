"""Validation of an uploaded RFT dataset: JSONL, one row per line, each with chat `messages`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

KNOWN_ROLES = ("system", "user", "assistant", "tool", "developer")
MAX_REPORTED_PROBLEMS = 20


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


def check_dataset_file(path: Path) -> DatasetReport:
    report = DatasetReport()
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            try:
                problem = row_problem(json.loads(raw))
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                problem = f"invalid JSON ({error})"
            if problem is None:
                report.example_count += 1
                continue
            report.problem_count += 1
            if len(report.problems) < MAX_REPORTED_PROBLEMS:
                report.problems.append((number, problem))
    return report


def read_rows(path: Path) -> list[dict]:
    with path.open("rb") as lines:
        return [json.loads(raw) for raw in lines if raw.strip()]
