"""A SIGKILLed job worker: the server notices, and a new worker resumes the job from its last checkpoint without
redoing finished steps; the output model then seeds a warm-started job."""

from __future__ import annotations

import os
import signal

import pytest
from server_harness import (
    DATASET,
    EVALUATOR,
    LocalServer,
    add_training_inputs,
    create_job,
    finished,
    job_metrics,
    output_metrics,
    small_job,
    wait_for,
    worker_pids,
)

from rftlab.fireworks.contract import COMPLETED, PENDING, RUNNING, VALIDATING

pytestmark = pytest.mark.slow

A = "/v1/accounts/local"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with LocalServer.under(tmp_path_factory.mktemp("server"), max_running_jobs=1) as running:
        with running.client() as client:
            add_training_inputs(client)
        yield running


def test_a_killed_worker_resumes_from_its_last_checkpoint(server):
    with server.client() as client:
        create_job(client, "local", "killed-worker", small_job(DATASET, EVALUATOR))
        wait_for(lambda: job_metrics(client, "local", "killed-worker"), "a first step")
        [pid] = worker_pids(server.state_dir)
        before_kill = job_metrics(client, "local", "killed-worker")
        os.kill(pid, signal.SIGKILL)
        done = wait_for(
            lambda: finished(client, "local", "killed-worker"), "the job to finish", timeout_s=400
        )
        assert done["state"] == "JOB_STATE_COMPLETED", done["status"]
        history = client.get(f"{A}/reinforcementFineTuningJobs/killed-worker/stateHistory").json()
        states = [entry["state"] for entry in history["stateHistory"]]
        assert states == [PENDING, VALIDATING, RUNNING, PENDING, VALIDATING, RUNNING, COMPLETED], states
        assert history["stateHistory"][3]["message"].startswith("interrupted ("), "the requeue says why"
        after = job_metrics(client, "local", "killed-worker")
        assert [m["step"] for m in after] == list(range(1, 5))
        # Steps finished before the kill were checkpointed and are not redone: their records are untouched.
        assert after[: len(before_kill)] == before_kill
        assert output_metrics(done)["steps"] == 4
        log = (server.state_dir / "accounts/local/jobs/killed-worker/worker.log").read_text()
        assert log.count("started on job killed-worker") >= 2, "a second worker took over"
        # one job at a time: each worker gets every core this server may use, unless the user chose otherwise
        threads = os.environ.get("OMP_NUM_THREADS") or str(len(os.sched_getaffinity(0)))
        assert f"(torch threads: {threads})" in log

        # Its output model is a valid starting point for another job.
        warm = small_job(
            "accounts/local/datasets/one-chunk",
            EVALUATOR,
            trainingConfig={"baseModel": None, "warmStartFrom": "accounts/local/models/killed-worker"},
        )
        del warm["trainingConfig"]["baseModel"]
        create_job(client, "local", "warm-start", warm)
        warm_done = wait_for(
            lambda: finished(client, "local", "warm-start"), "the warm-started job", timeout_s=300
        )
        assert warm_done["state"] == "JOB_STATE_COMPLETED", warm_done["status"]
        model = client.get(f"{A}/models/warm-start").json()
        assert model["baseModel"] == "tiny-arith" and model["peftDetails"]["baseModel"] == "tiny-arith"
