"""SIGKILL of the whole server (and its workers) mid-job: the next start resumes the job from its last checkpoint,
keeps every recorded step, and the local profile's key still works."""

from __future__ import annotations

import pytest
from server_harness import (
    DATASET,
    EVALUATOR,
    LocalServer,
    arithmetic_jsonl,
    create_evaluator,
    create_job,
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


def test_a_killed_server_resumes_its_jobs_on_the_next_start(tmp_path):
    server = LocalServer.under(tmp_path).start()
    key = server.local_key()
    with server.client() as client:
        assert upload_dataset(client, "local", "rows", arithmetic_jsonl(32)).status_code == 200
        create_evaluator(client, "local", "exact")
        create_job(client, "local", "survivor", small_job(DATASET, EVALUATOR))
        create_job(client, "local", "queued-behind", small_job(DATASET, EVALUATOR, chunkSize=32))
        wait_for(lambda: job_metrics(client, "local", "survivor"), "a first step")
        before_kill = job_metrics(client, "local", "survivor")

    server.kill_all()
    wait_for(lambda: not worker_pids(server.state_dir), "the workers to die with the server")

    restarted = LocalServer(home=server.home, state_dir=server.state_dir).start()
    try:
        assert restarted.local_key() == key, "the profile written on first start stays valid"
        with restarted.client() as client:
            state = job_state(client, "local", "survivor")
            assert state["state"] in ("JOB_STATE_PENDING", "JOB_STATE_VALIDATING", "JOB_STATE_RUNNING")
            done = wait_for(lambda: finished(client, "local", "survivor"), "the resumed job", timeout_s=400)
            assert done["state"] == "JOB_STATE_COMPLETED", done["status"]
            after = job_metrics(client, "local", "survivor")
            assert [m["step"] for m in after] == [1, 2, 3, 4]
            assert after[: len(before_kill)] == before_kill, "steps done before the kill are kept, not redone"
            assert output_metrics(done)["steps"] == 4
            model = client.get("/v1/accounts/local/models/survivor").json()
            assert model["kind"] == "HF_PEFT_ADDON" and model["baseModel"] == "tiny-arith"
            behind = wait_for(
                lambda: finished(client, "local", "queued-behind"), "the queued job", timeout_s=300
            )
            assert behind["state"] == "JOB_STATE_COMPLETED", behind["status"]
    finally:
        restarted.stop()
    assert not worker_pids(server.state_dir)
