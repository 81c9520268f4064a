"""Jobs on a real server that trains the tiny model: queue order with --max-running-jobs 1, a SIGKILLed worker
recovered from its last checkpoint, and a job whose evaluator always fails."""

from __future__ import annotations

import itertools
import os
import signal

import pytest
from server_harness import (
    LocalServer,
    arithmetic_jsonl,
    create_evaluator,
    finished,
    job_metrics,
    job_state,
    output_metrics,
    small_job,
    upload_dataset,
    wait_for,
    worker_pids,
)

pytestmark = pytest.mark.slow

A = "/v1/accounts/local"
DATASET, EVALUATOR = "accounts/local/datasets/rows", "accounts/local/evaluators/exact"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("server")
    running = LocalServer(home=root / "home", state_dir=root / "state", max_running_jobs=1).start()
    with running.client() as client:
        assert upload_dataset(client, "local", "rows", arithmetic_jsonl(32)).status_code == 200
        assert upload_dataset(client, "local", "one-chunk", arithmetic_jsonl(8)).status_code == 200
        create_evaluator(client, "local", "exact")
    yield running
    running.stop()


def create(client, job_id: str, body: dict) -> None:
    response = client.post(
        f"{A}/reinforcementFineTuningJobs", params={"reinforcementFineTuningJobId": job_id}, json=body
    )
    assert response.status_code == 200, response.text


def test_a_killed_worker_resumes_from_its_last_checkpoint(server):
    with server.client() as client:
        create(client, "killed-worker", small_job(DATASET, EVALUATOR))
        wait_for(lambda: job_metrics(client, "local", "killed-worker"), "a first step")
        [pid] = worker_pids(server.state_dir)
        before_kill = job_metrics(client, "local", "killed-worker")
        os.kill(pid, signal.SIGKILL)
        done = wait_for(
            lambda: finished(client, "local", "killed-worker"), "the job to finish", timeout_s=400
        )
        assert done["state"] == "JOB_STATE_COMPLETED", done["status"]
        after = job_metrics(client, "local", "killed-worker")
        assert [m["step"] for m in after] == list(range(1, 5))
        # Steps finished before the kill were checkpointed and are not redone: their records are untouched.
        assert after[: len(before_kill)] == before_kill
        assert output_metrics(done)["steps"] == 4
        log = (server.state_dir / "accounts/local/jobs/killed-worker/worker.log").read_text()
        assert log.count("Loading weights") >= 2, "a second worker took over"


def test_jobs_run_one_at_a_time_in_creation_order(server):
    names = ["queue-a", "queue-b", "queue-c"]
    with server.client() as client:
        for name in names:
            create(client, name, small_job("accounts/local/datasets/one-chunk", EVALUATOR))
        observed = []

        def all_done() -> bool:
            states = {name: job_state(client, "local", name)["state"] for name in names}
            observed.append(states)
            return all(finished(client, "local", name) for name in names)

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
        create(
            client,
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
