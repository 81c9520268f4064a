"""Jobs on a real server that trains the tiny model: queue order with --max-running-jobs 1, a job whose evaluator
always fails, and deleting a running job."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from server_harness import (
    DATASET,
    EVALUATOR,
    SERVER_SECRETS,
    TERMINAL_STATES,
    create_evaluator,
    create_job,
    finished,
    job_state,
    small_job,
    wait_for,
    worker_pids,
)

pytestmark = pytest.mark.slow

A = "/v1/accounts/local"


@pytest.fixture
def server(training_server):
    return training_server


def test_deleting_a_running_job_stops_its_worker_which_never_saw_the_servers_secrets(server):
    with server.client() as client:
        create_job(client, "local", "short-lived", small_job(DATASET, EVALUATOR))
        wait_for(
            lambda: job_state(client, "local", "short-lived")["state"] == "JOB_STATE_RUNNING", "training"
        )
        [pid] = worker_pids(server.state_dir)
        worker_env = Path(f"/proc/{pid}/environ").read_bytes()
        assert all(secret.encode() not in worker_env for secret in SERVER_SECRETS.values())
        assert b"FIREWORKS_API_KEY" not in worker_env and b"WANDB_API_KEY" not in worker_env
        assert client.delete(f"{A}/reinforcementFineTuningJobs/short-lived").status_code == 200
        wait_for(lambda: not worker_pids(server.state_dir), "the worker to end")
        assert client.get(f"{A}/reinforcementFineTuningJobs/short-lived").status_code == 404
        assert not (server.state_dir / "accounts/local/jobs/short-lived").exists()


def test_jobs_run_one_at_a_time_in_creation_order(server):
    names = ["queue-a", "queue-b", "queue-c"]
    with server.client() as client:
        for name in names:
            create_job(client, "local", name, small_job("accounts/local/datasets/one-chunk", EVALUATOR))
        observed = []

        def all_done() -> bool:
            states = {name: job_state(client, "local", name)["state"] for name in names}
            observed.append(states)
            return all(state in TERMINAL_STATES for state in states.values())

        wait_for(all_done, "the three queued jobs", timeout_s=400, every_s=0.2)
    active = ("JOB_STATE_VALIDATING", "JOB_STATE_RUNNING")
    for states in observed:
        assert sum(state in active for state in states.values()) <= 1, states
        for earlier, later in itertools.pairwise(names):
            if states[later] != "JOB_STATE_PENDING":
                assert states[earlier] != "JOB_STATE_PENDING", f"{later} started before {earlier}: {states}"
    assert all(states == "JOB_STATE_COMPLETED" for states in observed[-1].values()), observed[-1]


def test_an_evaluator_that_always_raises_fails_the_job_with_its_error(server):
    with server.client() as client:
        create_evaluator(
            client,
            "local",
            "raises",
            code="def evaluate(messages, **kwargs):\n    raise ValueError('judge offline')\n",
        )
        create_job(
            client,
            "local",
            "bad-evaluator",
            small_job("accounts/local/datasets/one-chunk", "accounts/local/evaluators/raises"),
        )
        failed = wait_for(
            lambda: finished(client, "local", "bad-evaluator"), "the job to fail", timeout_s=300
        )
        assert failed["state"] == "JOB_STATE_FAILED"
        assert "judge offline" in failed["status"]["message"]
        resumed = client.post(f"{A}/reinforcementFineTuningJobs/bad-evaluator:resume", json={})
        assert resumed.status_code == 200 and resumed.json()["state"] == "JOB_STATE_PENDING"
        again = wait_for(
            lambda: finished(client, "local", "bad-evaluator"), "the resumed job to fail", timeout_s=300
        )
        assert again["state"] == "JOB_STATE_FAILED" and "judge offline" in again["status"]["message"]


def test_a_job_the_engine_cannot_run_fails_while_validating(server):
    with server.client() as client:
        body = small_job(DATASET, EVALUATOR)
        body["inferenceParameters"]["extraBody"] = '{"logit_bias": {}}'
        create_job(client, "local", "with-bias", body)
        failed = wait_for(lambda: finished(client, "local", "with-bias"), "the job to fail", timeout_s=120)
        assert failed["state"] == "JOB_STATE_FAILED"
        assert (
            "'logit_bias'" in failed["status"]["message"] and "not supported" in failed["status"]["message"]
        )
        assert not (server.state_dir / "accounts/local/jobs/with-bias/checkpoints").exists(), (
            "training never began"
        )
