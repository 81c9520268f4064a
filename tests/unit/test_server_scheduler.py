"""The scheduler's bookkeeping on a real SQLite store, without starting workers (max_running=0): jobs whose worker
is gone go back to the queue, a cancel requested meanwhile wins, and endless interruptions end in FAILED."""

from __future__ import annotations

import os
import subprocess
import time

import pytest
from sqlalchemy import select

from rftlab.server.layout import StateLayout
from rftlab.server.scheduler import MAX_INTERRUPTIONS, Scheduler
from rftlab.server.store import Job, Store


@pytest.fixture
def store(tmp_path):
    opened = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    yield opened
    opened.dispose()


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def running_job(store: Store, job_id: str, **columns) -> None:
    values = {"worker_pid": dead_pid(), "heartbeat_at": time.time(), **columns}
    with store.session() as session:
        session.add(Job(account_id="a", job_id=job_id, spec={}, state="JOB_STATE_RUNNING", **values))


def states(store: Store) -> dict[str, tuple[str, str, int]]:
    with store.reading() as session:
        return {j.job_id: (j.state, j.status_message, j.interruptions) for j in session.scalars(select(Job))}


def test_a_job_whose_worker_is_gone_is_queued_again(store, tmp_path):
    running_job(store, "orphan")
    Scheduler(store, StateLayout(tmp_path), max_running=0).tick()
    state, message, interruptions = states(store)["orphan"]
    assert (state, interruptions) == ("JOB_STATE_PENDING", 1)
    assert "resume from its last checkpoint" in message


def test_a_silent_worker_is_queued_again(store, tmp_path):
    running_job(store, "silent", heartbeat_at=time.time() - 3600)
    Scheduler(store, StateLayout(tmp_path), max_running=0).tick()
    assert states(store)["silent"][0] == "JOB_STATE_PENDING"


def test_a_requested_cancel_wins_over_requeueing(store, tmp_path):
    running_job(store, "cancelled", cancel_requested=True)
    Scheduler(store, StateLayout(tmp_path), max_running=0).tick()
    assert states(store)["cancelled"][0] == "JOB_STATE_CANCELLED"


def test_too_many_interruptions_fail_the_job(store, tmp_path):
    running_job(store, "unlucky", interruptions=MAX_INTERRUPTIONS)
    Scheduler(store, StateLayout(tmp_path), max_running=0).tick()
    state, message, _ = states(store)["unlucky"]
    assert state == "JOB_STATE_FAILED" and ":resume" in message


def test_start_requeues_what_a_dead_server_left_running(store, tmp_path):
    running_job(store, "left-behind", worker_pid=None)
    scheduler = Scheduler(store, StateLayout(tmp_path), max_running=0)
    scheduler.recover_interrupted()
    state, message, _ = states(store)["left-behind"]
    assert state == "JOB_STATE_PENDING" and "server stopped" in message


def test_running_jobs_share_the_cores_without_oversubscribing_them(store, tmp_path):
    cores = len(os.sched_getaffinity(0))
    layout = StateLayout(tmp_path)
    assert Scheduler(store, layout, max_running=1).threads_per_job() == cores
    assert Scheduler(store, layout, max_running=cores).threads_per_job() == 1
    assert Scheduler(store, layout, max_running=4 * cores).threads_per_job() == 1
