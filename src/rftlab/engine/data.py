"""Rows: the evaluation carve-out and the seeded chunk order of each epoch."""

from __future__ import annotations

import random
from typing import Any

from rftlab.engine.api import JobFailed

Row = dict[str, Any]

CARVEOUT_SHARE = 0.10
CARVEOUT_MAX_ROWS = 100


def carveout_size(row_count: int) -> int:
    """Eval rows held out of `row_count` training rows: 10%, at most 100, at least 1 (0 with fewer than 2 rows,
    so training always keeps at least one row)."""
    if row_count < 2:
        return 0
    return max(1, min(CARVEOUT_MAX_ROWS, int(row_count * CARVEOUT_SHARE)))


def carve_out(rows: list[Row], seed: int) -> tuple[list[Row], list[Row]]:
    """(train, eval): a seeded shuffle picks the eval rows; both keep the dataset's order."""
    held = set(random.Random(f"carveout-{seed}").sample(range(len(rows)), carveout_size(len(rows))))
    train = [row for i, row in enumerate(rows) if i not in held]
    held_out = [row for i, row in enumerate(rows) if i in held]
    return train, held_out


def split_rows(
    train_rows: list[Row], eval_rows: list[Row] | None, auto_carveout: bool, seed: int
) -> tuple[list[Row], list[Row]]:
    """The rows the job trains on and the rows its eval reward is measured on (possibly none)."""
    if eval_rows:
        return train_rows, eval_rows
    if auto_carveout:
        return carve_out(train_rows, seed)
    return train_rows, []


def check_rows(rows: list[Row], what: str) -> None:
    if not rows:
        raise JobFailed(f"the {what} has no rows")
    for number, row in enumerate(rows, start=1):
        messages = row.get("messages")
        if not isinstance(messages, list) or not messages:
            raise JobFailed(
                f"{what} row {number}: 'messages' must be a non-empty list of {{role, content}} objects"
            )
        for message in messages:
            if not isinstance(message, dict) or "role" not in message:
                raise JobFailed(f"{what} row {number}: every message needs a 'role' and 'content'")


def chunk_rows(row_count: int, chunk_size: int) -> int:
    """Rows per rollout round; chunk size -1 (or one above the row count) means the whole epoch."""
    if chunk_size <= 0 or chunk_size > row_count:
        return row_count
    return chunk_size


def epoch_chunks(row_count: int, chunk_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Row indices of each chunk of `epoch`: a fresh seeded permutation per epoch, cut into chunks (the last
    one may be shorter)."""
    order = list(range(row_count))
    random.Random(f"epoch-{seed}-{epoch}").shuffle(order)
    size = chunk_rows(row_count, chunk_size)
    return [order[start : start + size] for start in range(0, row_count, size)]
