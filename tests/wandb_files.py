"""Reading back what W&B wrote for an offline run: the records of its `run-<id>.wandb` file.

The file is a LevelDB-style log (a 7-byte `:W&B` header, then 32 KiB blocks of records, each with a 7-byte header:
CRC, little-endian length, type) of `wandb_internal_pb2.Record` protobufs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from wandb.proto.wandb_internal_pb2 import Record

BLOCK = 32 * 1024
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(run_folder: Path) -> list[Record]:
    (path,) = run_folder.glob("run-*.wandb")
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    found, pending, position = [], b"", HEADER
    while position + HEADER <= len(data):
        left_in_block = BLOCK - position % BLOCK
        if left_in_block < HEADER:
            position += left_in_block
            continue
        length = int.from_bytes(data[position + 4 : position + 6], "little")
        kind = data[position + 6]
        pending += data[position + HEADER : position + HEADER + length]
        position += HEADER + length
        if kind in (FULL, LAST):
            record = Record()
            record.ParseFromString(pending)
            found.append(record)
            pending = b""
        elif kind not in (FIRST, MIDDLE):
            break  # zero padding at the end of the last block
    return found


def history(run_folder: Path) -> list[dict[str, Any]]:
    """The rows logged with `run.log`, in order, keyed by metric name (`_step` included)."""
    rows = []
    for record in records(run_folder):
        if record.WhichOneof("record_type") == "history":
            rows.append(_by_key(record.history.item))
    return rows


def run_settings(run_folder: Path) -> dict[str, Any]:
    """The run record: id, project, group, tags and config as the run was started."""
    for record in records(run_folder):
        if record.WhichOneof("record_type") == "run":
            run = record.run
            config = {item.key: json.loads(item.value_json) for item in run.config.update}
            return {
                "id": run.run_id,
                "project": run.project,
                "group": run.run_group,
                "tags": list(run.tags),
                "config": config,
            }
    raise AssertionError(f"{run_folder} holds no run record")


def summary(run_folder: Path) -> dict[str, Any]:
    """The last summary values written (`run.summary.update`)."""
    values: dict[str, Any] = {}
    for record in records(run_folder):
        if record.WhichOneof("record_type") == "summary":
            values.update(_by_key(record.summary.update))
    return values


def _by_key(items) -> dict[str, Any]:
    """History or summary items as {metric name: value}; a nested key is joined with '/'."""
    return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items}
