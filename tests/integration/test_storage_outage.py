"""`rftlab serve --storage-url file://...` whose bucket fails under a running job, for real: the job's checkpoint
folder in the bucket made immutable (chattr +i: it fails even for root) while the tiny model trains, so storing the
next checkpoint fails on every try; the worker ends, the job is queued again and, once the folder is writable,
resumes from its last stored checkpoint with no reported step lost. A job whose folder in the bucket stays
immutable (as a bucket the workers may not write) fails after the interruption cap, naming the key's URL and the
fix."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from server_harness import (
    EVALUATOR,
    LocalServer,
    create_job,
    finished,
    job_metrics,
    small_job,
    wait_for,
)

from rftlab.fireworks.contract import COMPLETED, PENDING, RUNNING, VALIDATING
from rftlab.server.scheduler import MAX_INTERRUPTIONS

pytestmark = pytest.mark.slow

JOBS = "/v1/accounts/local/reinforcementFineTuningJobs"


def immutable(folder: Path, on: bool) -> bool:
    if shutil.which("chattr") is None:
        return False
    return subprocess.run(["chattr", "+i" if on else "-i", str(folder)], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def server(storage_server: LocalServer) -> LocalServer:
    return storage_server


def history(client, job_id: str) -> list[dict]:
    return client.get(f"{JOBS}/{job_id}/stateHistory").json()["stateHistory"]


def test_a_checkpoint_store_that_keeps_failing_requeues_the_job_which_resumes_with_no_step_lost(
    server, bucket: Path
) -> None:
    checkpoints = bucket / "accounts/local/jobs/outage/checkpoints"
    with server.client() as client:
        create_job(client, "local", "outage", small_job("accounts/local/datasets/rows", EVALUATOR))
        wait_for(lambda: job_metrics(client, "local", "outage"), "a first step", 300)
        if not immutable(checkpoints, True):
            client.post(f"{JOBS}/outage:cancel")
            pytest.skip("chattr +i is not available here (it needs root and a filesystem that has it)")
        try:
            before_outage = job_metrics(client, "local", "outage")
            requeue = wait_for(
                lambda: next(
                    (
                        e
                        for e in history(client, "outage")
                        if e["state"] == PENDING and "storage" in e["message"]
                    ),
                    None,
                ),
                "the job queued again after its checkpoint could not be stored",
                120,
            )
        finally:
            immutable(checkpoints, False)
        done = wait_for(lambda: finished(client, "local", "outage"), "the job to finish", 400)
        states = [entry["state"] for entry in history(client, "outage")]
        after = job_metrics(client, "local", "outage")
    assert done["state"] == COMPLETED, done["status"]
    assert states[:3] == [PENDING, VALIDATING, RUNNING] and states[3:6] == [PENDING, VALIDATING, RUNNING], (
        states
    )
    url = f"file://{bucket}/accounts/local/jobs/outage/checkpoints/step-"
    assert requeue["message"].startswith(f"interrupted (the storage failed: storing {url}"), requeue
    assert "failed 3 times, last with PermissionError" in requeue["message"]
    assert [m["step"] for m in after] == list(range(1, 5))
    assert after[: len(before_outage)] == before_outage, "the steps reported before the outage are not redone"
    log = (server.state_dir / "accounts/local/jobs/outage/worker.log").read_text()
    assert "trying again in 2 s" in log and "trying again in 6 s" in log
    assert "ending this worker: the job goes back to the queue" in log
    assert "resuming from checkpoint step-" in log
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-000004"]


def test_a_bucket_the_workers_may_not_write_fails_the_job_after_the_cap_naming_the_url_and_the_fix(
    server, bucket: Path
) -> None:
    job_folder = bucket / "accounts/local/jobs/denied"
    job_folder.mkdir(parents=True)
    if not immutable(job_folder, True):
        pytest.skip("chattr +i is not available here (it needs root and a filesystem that has it)")
    try:
        with server.client() as client:
            create_job(client, "local", "denied", small_job("accounts/local/datasets/one-chunk", EVALUATOR))
            done = wait_for(lambda: finished(client, "local", "denied"), "the job to fail", 400)
    finally:
        immutable(job_folder, False)
    assert done["state"] == "JOB_STATE_FAILED", done
    message = done["status"]["message"]
    assert message.startswith(
        f"interrupted {MAX_INTERRUPTIONS + 1} times, last because the storage failed: storing "
        f"file://{job_folder}/checkpoints/step-000001 failed 3 times, last with PermissionError"
    ), message
    assert "rftlab serve --storage-url" in message and ":resume to try again" in message
