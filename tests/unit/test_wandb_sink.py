"""The local backend's W&B sink: a job worker's steps reach an offline W&B run and the store alike."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import select

from rftlab.engine.api import JobOutcome
from rftlab.fireworks.contract import COMPLETED
from rftlab.server import wandb_sink
from rftlab.server.api_jobs import render
from rftlab.server.store import Job, JobMetric, Store
from rftlab.server.worker import StoreReporter
from wandb_files import history, run_settings, summary

WANDB_KEY = "wandb-marker-SECRET-77ab03"


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_DIR", raising=False)
    return Store(f"sqlite:///{tmp_path / 'rftlab.db'}")


def running_job(store: Store, wandb_config: dict | None) -> Job:
    """A job as the create route stores it (the key kept apart) and claimed by this process as its worker."""
    spec = {"dataset": "d", "evaluator": "e", "trainingConfig": {"baseModel": "tiny-arith"}}
    if wandb_config is not None:
        spec["wandbConfig"] = wandb_config
    with store.session() as session:
        job = Job(
            account_id="local",
            job_id="job-w",
            spec=spec,
            secrets={"wandbApiKey": WANDB_KEY},
            state="JOB_STATE_RUNNING",
            worker_pid=os.getpid(),
        )
        session.add(job)
        session.flush()
        seq = job.seq
    with store.session() as session:
        return session.get(Job, seq)


def steps(count: int) -> list[dict[str, float]]:
    return [{"step": s, "epoch": 0, "reward_mean": 0.1 * s, "loss": -0.01 * s} for s in range(1, count + 1)]


def stored_job(store: Store, seq: int) -> Job:
    with store.session() as session:
        return session.get(Job, seq)


def test_every_step_reaches_the_offline_run_and_the_store(store, tmp_path):
    config = {"enabled": True, "project": "p", "mode": "offline", "runId": "job-w", "group": "lr_rank"}
    config |= {"tags": ["training.lora_rank=8"], "config": {"training.lora_rank": 8}}
    job = running_job(store, config)
    job_dir = tmp_path / "job"
    with wandb_sink.reporting(store, job, StoreReporter(store, job.seq), job_dir) as tracked:
        for metrics in steps(3):
            tracked.step(metrics)
        tracked.finish(JobOutcome(COMPLETED, "", {"reward_last": 0.3, "steps": 3}))

    url = stored_job(store, job.seq).spec["wandbConfig"]["url"]
    (folder,) = (job_dir / "wandb").glob("offline-run-*-job-w")
    assert url == folder.as_uri()
    assert [{k: v for k, v in row.items() if not k.startswith("_")} for row in history(folder)] == steps(3)
    assert [row["_step"] for row in history(folder)] == [1, 2, 3]
    assert summary(folder)["reward_last"] == 0.3 and summary(folder)["steps"] == 3
    settings = run_settings(folder)
    assert (settings["id"], settings["project"], settings["group"]) == ("job-w", "p", "lr_rank")
    assert settings["tags"] == ["training.lora_rank=8"] and settings["config"]["training.lora_rank"] == 8
    with store.session() as session:
        stored = session.scalars(
            select(JobMetric).where(JobMetric.job_seq == job.seq).order_by(JobMetric.step)
        )
        assert [row.metrics for row in stored] == steps(3)
    shown = render(stored_job(store, job.seq))
    assert shown["wandbConfig"]["url"] == url and "apiKey" not in shown["wandbConfig"]
    for path in job_dir.rglob("*"):
        assert not path.is_file() or WANDB_KEY.encode() not in path.read_bytes(), (
            f"the key leaked into {path}"
        )


def test_a_job_without_wandb_writes_no_run(store, tmp_path):
    job = running_job(store, None)
    job_dir = tmp_path / "job"
    with wandb_sink.reporting(store, job, StoreReporter(store, job.seq), job_dir) as tracked:
        tracked.step(steps(1)[0])
    assert tracked.run is None and not (job_dir / "wandb").exists()
    assert "wandbConfig" not in stored_job(store, job.seq).spec


def test_a_run_that_cannot_start_costs_the_run_not_the_training(store, tmp_path, capfd):
    job = running_job(store, {"enabled": True, "project": "p", "mode": "offline"})
    job_dir = tmp_path / "job"
    job_dir.write_text("a file where the run folder would go")
    with wandb_sink.reporting(store, job, StoreReporter(store, job.seq), job_dir) as tracked:
        tracked.step(steps(1)[0])
    assert tracked.run is None and "W&B run not started" in capfd.readouterr().err
    with store.session() as session:
        assert session.scalars(select(JobMetric.step).where(JobMetric.job_seq == job.seq)).all() == [1]
