"""A job's rollouts reach the store and, when W&B is on, one W&B table per step."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select
from test_wandb_sink import running_job, store  # noqa: F401  (store is a fixture)

from rftlab.server import wandb_sink
from rftlab.server.store import JobRollout
from rftlab.server.worker import StoreReporter
from wandb_files import history


def reported(step: int) -> list[dict]:
    return [
        {
            "row_index": 7,
            "group": 0,
            "candidate": candidate,
            "messages": [
                {"role": "user", "content": "What is 3+4?"},
                {"role": "assistant", "content": answer},
            ],
            "completion_text": answer,
            "reward": float(answer == "7"),
            "valid": True,
            "reason": "exact match" if answer == "7" else "expected 7",
            "finish_reason": "stop",
            "prompt_tokens": 9,
            "completion_tokens": 1,
            "advantage": 1.0 if answer == "7" else -1.0,
        }
        for candidate, answer in enumerate(["7", str(step)])
    ]


@pytest.mark.slow  # a W&B run takes seconds to start and finish
def test_each_steps_rollouts_become_a_wandb_table_and_stored_rows(store, tmp_path):  # noqa: F811
    job = running_job(store, {"enabled": True, "project": "p", "mode": "offline", "runId": "job-w"})
    job_dir = tmp_path / "job"
    with wandb_sink.reporting(store, job, StoreReporter(store, job.seq), job_dir) as tracked:
        tracked.rollouts("eval", 0, reported(0))
        for step in (1, 2):
            tracked.step({"step": step, "reward_mean": 0.5})
        tracked.rollouts("train", 1, reported(1))  # a chunk's rollouts after its last step: logged at step 2
    (folder,) = (job_dir / "wandb").glob("offline-run-*-job-w")
    # W&B's history flattens a table's entry into `<key>/_type`, `<key>/path`...
    tables = [
        (row["_step"], key.removesuffix("/_type"), row[key.replace("/_type", "/path")])
        for row in history(folder)
        for key in row
        if key.startswith("rollouts/") and key.endswith("/_type") and row[key] == "table-file"
    ]
    assert [(step, key) for step, key, _ in tables] == [(0, "rollouts/eval"), (2, "rollouts/train")]
    table_file = folder / "files" / tables[1][2]
    content = json.loads(table_file.read_text())
    assert content["columns"][:3] == ["step", "kind", "row"]
    assert [row[content["columns"].index("completion")] for row in content["data"]] == ["7", "1"]
    assert [row[0] for row in content["data"]] == [1, 1]
    with store.reading() as session:
        kept = session.execute(select(JobRollout.kind, JobRollout.step, JobRollout.candidate)).all()
    assert sorted(kept) == [("eval", 0, 0), ("eval", 0, 1), ("train", 1, 0), ("train", 1, 1)]
