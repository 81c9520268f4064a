"""A storage that fails while a job's worker uses it (a registered fsspec filesystem, the local one with failures
put in front): a blip is tried again and passes; a failure that lasts ends the try with StorageUnavailable naming
the key's URL and the fix, before the step it would have stored is reported; what is absent is not tried again;
and the scheduler queues the job of a worker that ended so, counted against the interruption cap."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from fsspec import register_implementation
from fsspec.implementations.local import LocalFileSystem
from sqlalchemy import select
from storage_fixtures import Recorded, save_checkpoint_like_the_engine

from rftlab.server import job_storage
from rftlab.server.job_storage import StoringReporter, fetch_checkpoint, retried
from rftlab.server.layout import StateLayout
from rftlab.server.scheduler import MAX_INTERRUPTIONS, Scheduler
from rftlab.server.storage import (
    UNAVAILABLE_EXIT,
    UNAVAILABLE_PREFIX,
    Storage,
    StorageMissing,
    StorageUnavailable,
)
from rftlab.server.store import Job, Store


class FlakyFileSystem(LocalFileSystem):
    """file:// whose copies fail while `failures_left` (all of them when negative)."""

    protocol = "flaky"
    failures_left = 0
    tries = 0

    @classmethod
    def _strip_protocol(cls, path):
        return super()._strip_protocol(str(path).removeprefix("flaky://"))

    def _copy_or_fail(self) -> None:
        FlakyFileSystem.tries += 1
        if FlakyFileSystem.failures_left:
            FlakyFileSystem.failures_left -= 1
            raise ConnectionResetError(104, "Connection reset by peer")

    def put_file(self, lpath, rpath, **kwargs):
        self._copy_or_fail()
        return super().put_file(lpath, rpath, **kwargs)

    def get_file(self, rpath, lpath, **kwargs):
        self._copy_or_fail()
        return super().get_file(rpath, lpath, **kwargs)


register_implementation("flaky", FlakyFileSystem, clobber=True)


@pytest.fixture
def flaky(tmp_path, monkeypatch) -> str:
    monkeypatch.setattr(job_storage, "RETRY_DELAYS_S", (0.05, 0.1))
    monkeypatch.setattr(FlakyFileSystem, "failures_left", 0)
    monkeypatch.setattr(FlakyFileSystem, "tries", 0)
    return f"flaky://{tmp_path / f'bucket-{uuid.uuid4().hex[:6]}'}/prefix"


def checkpoints_of(storage: Storage) -> Path:
    return StateLayout(storage.root).job_dir("acct", "job") / "checkpoints"


def test_a_blip_while_storing_a_checkpoint_is_tried_again_and_passes(flaky, tmp_path, capsys):
    node = Storage(flaky).on(tmp_path / "node-a")
    recorded = Recorded()
    reporter = StoringReporter(recorded, node, checkpoints_of(node), None)
    save_checkpoint_like_the_engine(checkpoints_of(node), 1)
    FlakyFileSystem.failures_left = 2
    reporter.step({"step": 1})
    assert node.folders(checkpoints_of(node)) == ["step-000001"] and recorded.calls == ["step 1"]
    log = capsys.readouterr().err
    assert log.count("failed (ConnectionResetError: [Errno 104] Connection reset by peer); trying again") == 2
    assert f"storing {flaky}/accounts/acct/jobs/job/checkpoints/step-000001 failed" in log


def test_a_lasting_failure_names_the_key_and_the_fix_and_the_step_is_not_reported(flaky, tmp_path):
    node = Storage(flaky).on(tmp_path / "node-a")
    recorded = Recorded()
    reporter = StoringReporter(recorded, node, checkpoints_of(node), None)
    save_checkpoint_like_the_engine(checkpoints_of(node), 1)
    reporter.step({"step": 1})
    save_checkpoint_like_the_engine(checkpoints_of(node), 2)
    FlakyFileSystem.failures_left = -1
    started, tries_before = time.monotonic(), FlakyFileSystem.tries
    with pytest.raises(StorageUnavailable) as failed:
        reporter.step({"step": 2})
    assert FlakyFileSystem.tries - tries_before == 3 and time.monotonic() - started >= 0.15
    message = str(failed.value)
    assert message.startswith(
        f"storing {flaky}/accounts/acct/jobs/job/checkpoints/step-000002 failed 3 times"
    )
    assert "ConnectionResetError" in message and "rftlab serve --storage-url" in message
    assert recorded.calls == ["step 1"], "step 2 is not reported: its checkpoint is not stored"

    FlakyFileSystem.failures_left = 1  # the job's next start, elsewhere, resumes from the stored step 1
    other = Storage(flaky).on(tmp_path / "node-b")
    assert fetch_checkpoint(other, checkpoints_of(other)) == "step-000001"


def test_what_is_absent_is_not_tried_again(flaky, tmp_path):
    node = Storage(flaky).on(tmp_path / "node-a")
    dataset = StateLayout(node.root).dataset_file("acct", "gone")
    with pytest.raises(StorageMissing, match=r"accounts/acct/datasets/gone/data\.jsonl"):
        retried(node, "fetching", dataset, lambda: node.fetch_file(dataset))
    assert FlakyFileSystem.tries == 1


@pytest.fixture
def store(tmp_path):
    opened = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    yield opened
    opened.dispose()


def worker_the_storage_failed(store: Store, scheduler: Scheduler, job_id: str, **columns) -> None:
    """A job whose worker (a real child of the scheduler) said why in the job's status and ended as the job
    worker does when the storage keeps failing."""
    process = subprocess.Popen([sys.executable, "-c", f"raise SystemExit({UNAVAILABLE_EXIT})"])
    process.wait()
    message = (
        f"{UNAVAILABLE_PREFIX}storing file:///gone/bucket/accounts/a/jobs/{job_id}/checkpoints/step-000002"
    )
    with store.session() as session:
        job = Job(account_id="a", job_id=job_id, spec={}, state="JOB_STATE_RUNNING", **columns)
        job.worker_pid, job.heartbeat_at, job.status_message = process.pid, time.time(), message
        session.add(job)
        session.flush()
        scheduler._children[job.seq] = process


def job_row(store: Store, job_id: str) -> Job:
    with store.reading() as session:
        return session.scalars(select(Job).where(Job.job_id == job_id)).one()


def test_the_scheduler_queues_the_job_of_a_worker_the_storage_failed_up_to_the_cap(store, tmp_path):
    scheduler = Scheduler(store, StateLayout(tmp_path), max_running=0)
    worker_the_storage_failed(store, scheduler, "blip")
    worker_the_storage_failed(store, scheduler, "bucket-gone", interruptions=MAX_INTERRUPTIONS)
    scheduler.tick()
    requeued = job_row(store, "blip")
    assert (requeued.state, requeued.interruptions) == ("JOB_STATE_PENDING", 1)
    assert requeued.status_message.startswith(
        "interrupted (the storage failed: storing file:///gone/bucket/accounts/a/jobs/blip/checkpoints/"
    ) and requeued.status_message.endswith("queued to resume from its last checkpoint")
    failed = job_row(store, "bucket-gone")
    assert failed.state == "JOB_STATE_FAILED"
    assert "last because the storage failed: storing file:///gone/bucket/" in failed.status_message
