"""The worker's Reporter puts the engine's warnings in a running job's status message, and nowhere else."""

from __future__ import annotations

import os

import pytest

from rftlab.fireworks.contract import COMPLETED, RUNNING
from rftlab.server.store import Job, Store
from rftlab.server.worker import StoreReporter

WARNING = "warning: 30 of 32 replies in the round ending at step 3 hit maxOutputTokens (8) and were cut off"


@pytest.fixture
def store(tmp_path):
    return Store(f"sqlite:///{tmp_path / 'rftlab.db'}")


def claimed_job(store: Store, job_id: str, **fields) -> int:
    """A RUNNING job claimed by this process as its worker, unless `fields` say otherwise."""
    with store.session() as session:
        job = Job(
            account_id="local",
            job_id=job_id,
            spec={"dataset": "d", "evaluator": "e", "trainingConfig": {"baseModel": "tiny-arith"}},
            **{"state": RUNNING, "status_message": "training", "worker_pid": os.getpid(), **fields},
        )
        session.add(job)
        session.flush()
        return job.seq


def status(store: Store, seq: int) -> tuple[str, str]:
    with store.reading() as session:
        job = session.get(Job, seq)
        return job.state, job.status_message


def test_a_note_becomes_the_running_jobs_status_message(store):
    seq = claimed_job(store, "noted")
    StoreReporter(store, seq).note(WARNING)
    assert status(store, seq) == (RUNNING, WARNING)


def test_a_note_keeps_a_cancels_message_and_a_finished_jobs(store):
    cancelling = claimed_job(
        store, "cancelling", cancel_requested=True, status_message="cancel requested: stopping now"
    )
    StoreReporter(store, cancelling).note(WARNING)
    assert status(store, cancelling) == (RUNNING, "cancel requested: stopping now")
    finished = claimed_job(store, "finished", state=COMPLETED, status_message="done")
    StoreReporter(store, finished).note(WARNING)
    assert status(store, finished) == (COMPLETED, "done")


def test_a_note_from_a_worker_that_no_longer_holds_the_job_is_dropped(store):
    seq = claimed_job(store, "taken", worker_pid=os.getpid() + 1)
    StoreReporter(store, seq).note(WARNING)
    assert status(store, seq) == (RUNNING, "training")
