"""A job's state history on a real `rftlab serve`: a job that really ran, was cancelled, resumed and completed shows
every state it entered, in order, with its time and status message; no other account reads it. (A queued job
cancelled and resumed: test_server_api.py; a worker killed and the job requeued: test_server_worker_kill.py.)"""

from __future__ import annotations

from datetime import datetime

import pytest
from server_harness import (
    DATASET,
    EVALUATOR,
    create_job,
    finished,
    job_state,
    small_job,
    wait_for,
)

from rftlab.fireworks.contract import CANCELLED, COMPLETED, PENDING, RUNNING, VALIDATING

JOBS = "/v1/accounts/local/reinforcementFineTuningJobs"

pytestmark = pytest.mark.slow


def history(client, job_id: str) -> list[dict]:
    answer = client.get(f"{JOBS}/{job_id}/stateHistory")
    assert answer.status_code == 200, answer.text
    return answer.json()["stateHistory"]


def in_time_order(entries: list[dict]) -> bool:
    times = [datetime.fromisoformat(entry["time"].replace("Z", "+00:00")) for entry in entries]
    return times == sorted(times)


def test_a_job_that_ran_was_cancelled_and_resumed_shows_those_transitions_in_order(training_server):
    with training_server.client() as client:
        create_job(client, "local", "stop-and-go", small_job(DATASET, EVALUATOR))
        wait_for(lambda: job_state(client, "local", "stop-and-go")["state"] == RUNNING, "the job to run")
        assert client.post(f"{JOBS}/stop-and-go:cancel").status_code == 200
        wait_for(lambda: finished(client, "local", "stop-and-go"), "the cancel", timeout_s=60)
        assert client.post(f"{JOBS}/stop-and-go:resume").status_code == 200
        job = wait_for(
            lambda: finished(client, "local", "stop-and-go"), "the resumed job to end", timeout_s=600
        )
        entries = history(client, "stop-and-go")
    assert job["state"] == COMPLETED, job
    assert [e["state"] for e in entries] == [
        PENDING,
        VALIDATING,
        RUNNING,
        CANCELLED,
        PENDING,
        VALIDATING,
        RUNNING,
        COMPLETED,
    ], entries
    messages = [e["message"] for e in entries]
    assert messages[2] == messages[6] == "training"
    assert "cancelled" in messages[3] and messages[4].startswith("resumed")
    assert in_time_order(entries)
    assert entries[0]["time"] == job["createTime"] and entries[-1]["time"] == job["updateTime"]
    with training_server.client(training_server.add_account("history-other")) as other:
        assert other.get(f"{JOBS}/stop-and-go/stateHistory").status_code == 404
        own_path = "/v1/accounts/history-other/reinforcementFineTuningJobs/stop-and-go/stateHistory"
        assert other.get(own_path).status_code == 404
