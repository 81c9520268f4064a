"""The whole RFT workflow with the official `fireworks-ai` SDK as the client, against a real `rftlab serve` on
127.0.0.1 that trains the bundled tiny model: dataset, evaluator upload, job, list, get, cancel, resume, result."""

from __future__ import annotations

import json
from pathlib import Path

import fireworks
import httpx
import pytest
from server_harness import EXACT_MATCH, TERMINAL_STATES, LocalServer, arithmetic_jsonl, wait_for

pytestmark = pytest.mark.slow

JOB_ID = "sdk-arith"
TRAIN_STEPS = 6  # 53 rows, 5 carved out for eval, 48 in chunks of 8


ACCOUNT = "sdk"  # an account of its own on the shared training server: its lists hold only this module's work


@pytest.fixture
def server(training_server):
    return training_server


@pytest.fixture(scope="module")
def key(training_server) -> str:
    return training_server.add_account(ACCOUNT)


@pytest.fixture
def fw(server, key) -> fireworks.Fireworks:
    return fireworks.Fireworks(api_key=key, account_id=ACCOUNT, base_url=server.base_url)


def test_dataset_and_evaluator_through_the_sdk(fw):
    created = fw.datasets.create(dataset_id="arith", dataset={"display_name": "Arithmetic"})
    assert created.state == "UPLOADING"
    fw.datasets.upload("arith", file=("train.jsonl", arithmetic_jsonl(53)))
    dataset = fw.datasets.get("arith")
    assert (dataset.state, dataset.example_count) == ("READY", "53")

    code = EXACT_MATCH.read_bytes()
    evaluator = fw.evaluators.create(
        evaluator_id="exact",
        evaluator={"display_name": "Exact match", "entry_point": "exact_match.py::evaluate"},
    )
    assert evaluator.state == "BUILDING"
    endpoint = fw.evaluators.get_upload_endpoint("exact", filename_to_size={"exact_match.py": str(len(code))})
    url = endpoint.filename_to_signed_urls["exact_match.py"]
    put = httpx.put(url, content=code, headers={"Content-Type": "application/octet-stream"})
    assert put.status_code == 200
    fw.evaluators.validate_upload("exact", body={})
    assert fw.evaluators.get("exact").state == "ACTIVE"
    assert f"accounts/{ACCOUNT}/evaluators/exact" in [e.name for e in fw.evaluators.list()]


def create_job(fw: fireworks.Fireworks, job_id: str, **training):
    return fw.reinforcement_fine_tuning_jobs.create(
        reinforcement_fine_tuning_job_id=job_id,
        dataset=f"accounts/{ACCOUNT}/datasets/arith",
        evaluator=f"accounts/{ACCOUNT}/evaluators/exact",
        eval_auto_carveout=True,
        training_config={"base_model": "tiny-arith", "learning_rate": 0.002, "lora_rank": 8, **training},
        inference_parameters={"response_candidates_count": 4, "max_output_tokens": 8, "temperature": 1.0},
        chunk_size=8,
    )


def metric_steps(server: LocalServer, key: str, job_id: str) -> list[dict]:
    with server.client(key) as client:
        response = client.get(f"/v1/accounts/{ACCOUNT}/reinforcementFineTuningJobs/{job_id}/metrics")
    return response.json()["metrics"]


def test_job_runs_cancels_resumes_and_completes(fw, server, key):
    job = create_job(fw, JOB_ID)
    assert job.state in ("JOB_STATE_PENDING", "JOB_STATE_VALIDATING")
    assert job.training_config.output_model == f"accounts/{ACCOUNT}/models/{JOB_ID}"
    with pytest.raises(fireworks.ConflictError):
        create_job(fw, JOB_ID)

    wait_for(lambda: metric_steps(server, key, JOB_ID), "the first training step")
    assert fw.reinforcement_fine_tuning_jobs.get(JOB_ID).state == "JOB_STATE_RUNNING"
    fw.reinforcement_fine_tuning_jobs.cancel(JOB_ID, body={})
    cancelled = wait_for(
        lambda: (j := fw.reinforcement_fine_tuning_jobs.get(JOB_ID)).state in TERMINAL_STATES and j,
        "the cancel",
    )
    assert cancelled.state == "JOB_STATE_CANCELLED", cancelled.status
    steps_at_cancel = [m["step"] for m in metric_steps(server, key, JOB_ID)]
    assert 1 <= len(steps_at_cancel) < TRAIN_STEPS
    checkpoints = server.state_dir / f"accounts/{ACCOUNT}/jobs" / JOB_ID / "checkpoints"
    assert any(checkpoints.iterdir()), "cancel keeps the last checkpoint"

    fw.reinforcement_fine_tuning_jobs.resume(JOB_ID, body={})
    done = wait_for(
        lambda: (j := fw.reinforcement_fine_tuning_jobs.get(JOB_ID)).state in TERMINAL_STATES and j,
        "the resumed job to finish",
        timeout_s=400,
    )
    assert done.state == "JOB_STATE_COMPLETED", done.status
    metrics = metric_steps(server, key, JOB_ID)
    assert [m["step"] for m in metrics] == list(range(1, TRAIN_STEPS + 1))
    assert all("reward_mean" in m and "loss" in m for m in metrics)
    final = json.loads(done.output_metrics)
    assert final["steps"] == TRAIN_STEPS
    assert 0.0 <= final["eval_reward_before"] <= 1.0 and 0.0 <= final["eval_reward_after"] <= 1.0
    assert done.job_progress.percent == 100

    model = fw.models.get(JOB_ID)
    assert model.kind == "HF_PEFT_ADDON"
    assert model.peft_details.base_model == "tiny-arith" and model.peft_details.r == 8
    adapter = Path(model.model_extra["adapterPath"])
    assert (adapter / "adapter_config.json").is_file()
    assert adapter.is_relative_to(server.state_dir)
    assert [m.name for m in fw.models.list()] == [f"accounts/{ACCOUNT}/models/{JOB_ID}"]


def test_list_get_errors_and_delete_through_the_sdk(fw):
    names = [job.name for job in fw.reinforcement_fine_tuning_jobs.list(page_size=1)]
    assert names == [f"accounts/{ACCOUNT}/reinforcementFineTuningJobs/{JOB_ID}"]
    with pytest.raises(fireworks.NotFoundError):
        fw.reinforcement_fine_tuning_jobs.get("no-such-job")
    with pytest.raises(fireworks.BadRequestError) as refused:
        create_job(fw, "clashing-output", output_model=JOB_ID)
    assert "trainingConfig.outputModel" in refused.value.body["error"]["message"]
    with pytest.raises(fireworks.BadRequestError) as not_resumable:
        fw.reinforcement_fine_tuning_jobs.resume(JOB_ID, body={})
    assert not_resumable.value.body["error"]["status"] == "FAILED_PRECONDITION"
    fw.reinforcement_fine_tuning_jobs.delete(JOB_ID)
    with pytest.raises(fireworks.NotFoundError):
        fw.reinforcement_fine_tuning_jobs.get(JOB_ID)
    assert fw.models.get(JOB_ID).state == "READY", "the output model outlives its job"
