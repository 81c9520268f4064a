"""The queue across accounts, on a real SQLite store: accounts take turns whatever order their jobs were queued in,
and one account runs at most `--max-running-jobs-per-account` jobs. The workers started are stand-in processes
(`sleep`) so that only the scheduling is under test."""

from __future__ import annotations

import subprocess
import time

import pytest
from sqlalchemy import select

from rftlab.server.layout import StateLayout
from rftlab.server.limits import ServerLimits
from rftlab.server.scheduler import Scheduler
from rftlab.server.store import Job, Store


class RecordingScheduler(Scheduler):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.started: list[str] = []

    def _spawn(self, job: Job) -> subprocess.Popen:
        self.started.append(f"{job.account_id}/{job.job_id}")
        process = subprocess.Popen(["sleep", "60"], start_new_session=True)
        self._children[job.seq] = process
        return process

    def kill_all(self) -> None:
        for process in self._children.values():
            process.kill()
            process.wait()


@pytest.fixture
def store(tmp_path):
    opened = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    yield opened
    opened.dispose()


def queue(store: Store, *jobs: str) -> None:
    with store.session() as session:
        for index, name in enumerate(jobs):
            account, job_id = name.split("/")
            session.add(
                Job(account_id=account, job_id=job_id, spec={}, state="JOB_STATE_PENDING", queued_at=index)
            )


def run_queue(store: Store, tmp_path, max_running: int, limits: ServerLimits) -> list[str]:
    scheduler = RecordingScheduler(store, StateLayout(tmp_path), max_running, limits)
    try:
        scheduler.tick()
    finally:
        scheduler.kill_all()
    return scheduler.started


def test_accounts_take_turns_whoever_queued_first(store, tmp_path):
    queue(store, "greedy/g1", "greedy/g2", "greedy/g3", "greedy/g4", "bob/b1", "bob/b2", "carol/c1")
    started = run_queue(store, tmp_path, max_running=5, limits=ServerLimits())
    assert started == ["bob/b1", "carol/c1", "greedy/g1", "bob/b2", "greedy/g2"]


def test_one_account_runs_at_most_its_share(store, tmp_path):
    queue(store, "greedy/g1", "greedy/g2", "greedy/g3", "bob/b1")
    started = run_queue(store, tmp_path, max_running=4, limits=ServerLimits(max_running_jobs_per_account=2))
    assert sorted(started) == ["bob/b1", "greedy/g1", "greedy/g2"]
    with store.reading() as session:
        waiting = session.scalars(select(Job.job_id).where(Job.state == "JOB_STATE_PENDING")).all()
    assert waiting == ["g3"]


def test_a_stuck_cancelled_worker_is_ended_after_the_grace(store, tmp_path, monkeypatch):
    monkeypatch.setattr("rftlab.server.scheduler.CANCEL_GRACE_S", 0.2)
    queue(store, "a/stuck")
    scheduler = RecordingScheduler(store, StateLayout(tmp_path), 1, ServerLimits())
    try:
        scheduler.tick()
        with store.session() as session:
            job = session.scalars(select(Job)).one()
            job.state, job.cancel_requested = "JOB_STATE_RUNNING", True
        scheduler.tick()
        time.sleep(0.3)
        scheduler.tick()
        process = next(iter(scheduler._children.values()), None)
    finally:
        scheduler.kill_all()
    with store.reading() as session:
        assert session.scalars(select(Job.state)).one() == "JOB_STATE_CANCELLED"
    assert process is None
