"""A job's state history on a real `rftlab serve`: every state it entered, in order, with its time and status
message, from a queued job cancelled and resumed to a job that really ran, was cancelled, resumed and completed."""

from __future__ import annotations

from datetime import datetime

import pytest
from server_harness import (
    DATASET,
    EVALUATOR,
    arithmetic_jsonl,
    create_evaluator,
    create_job,
    finished,
    job_state,
    small_job,
    upload_dataset,
    wait_for,
)

from rftlab.fireworks.contract import CANCELLED, COMPLETED, PENDING, RUNNING, VALIDATING

JOBS = "/v1/accounts/local/reinforcementFineTuningJobs"


def history(client, job_id: str) -> list[dict]:
    answer = client.get(f"{JOBS}/{job_id}/stateHistory")
    assert answer.status_code == 200, answer.text
    return answer.json()["stateHistory"]


def in_time_order(entries: list[dict]) -> bool:
    times = [datetime.fromisoformat(entry["time"].replace("Z", "+00:00")) for entry in entries]
    return times == sorted(times)


def test_a_queued_job_cancelled_and_resumed_shows_each_state_it_entered(server, client):
    assert upload_dataset(client, "local", "rows", arithmetic_jsonl(8)).status_code == 200
    create_evaluator(client, "local", "exact")
    create_job(
        client,
        "local",
        "queued",
        small_job("accounts/local/datasets/rows", "accounts/local/evaluators/exact"),
    )
    assert client.post(f"{JOBS}/queued:cancel").status_code == 200
    assert client.post(f"{JOBS}/queued:resume").status_code == 200
    entries = history(client, "queued")
    assert [(e["state"], e["message"]) for e in entries] == [
        (PENDING, "queued"),
        (CANCELLED, "cancelled before it started"),
        (PENDING, "resumed: queued to continue from its last checkpoint"),
    ]
    assert in_time_order(entries)
    assert entries[-1]["time"] == job_state(client, "local", "queued")["updateTime"]


def test_the_history_is_the_accounts_own(server, client):
    other_key = server.add_account("history-other")
    with server.client(other_key) as other:
        assert other.get(f"{JOBS}/queued/stateHistory").status_code == 404
        assert (
            other.get(
                "/v1/accounts/history-other/reinforcementFineTuningJobs/queued/stateHistory"
            ).status_code
            == 404
        )
    assert client.get(f"{JOBS}/queued/stateHistory", headers={"Authorization": ""}).status_code == 401
    assert client.get(f"{JOBS}/nobody/stateHistory").status_code == 404


@pytest.mark.slow
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
