"""The job queue inside the server: starts one worker process per job, at most `max_running` at once (and at most
`--max-running-jobs-per-account` of one account), taking the accounts in turn and each account's jobs in queue
order; notices dead workers (exit status, pid, heartbeat) and puts their jobs back in the queue, so they resume from
their last checkpoint. It also ends a cancelled job whose worker did not stop by itself, and expires abandoned
uploads.

Each worker leads its own process group, so stopping it takes everything it started in that group (evaluator
processes, in their own sandboxes, end when the worker does). Workers are found and stopped by pid, safely: a pid
is only signalled when /proc shows it is the worker of that job (pids are reused), and a zombie counts as dead."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from sqlalchemy import func, select

from rftlab.fireworks.contract import ACTIVE_STATES, CANCELLED, FAILED, PENDING, VALIDATING
from rftlab.server.clean_env import clean_environment
from rftlab.server.executors import WorkerHandle, configured_executor
from rftlab.server.job_secrets import unseal
from rftlab.server.layout import StateLayout
from rftlab.server.limits import ServerLimits
from rftlab.server.server_key import SERVER_KEY_ENV, server_key_text
from rftlab.server.storage import (
    UNAVAILABLE_EXIT,
    UNAVAILABLE_PREFIX,
    configured_storage,
    storage_credentials,
)
from rftlab.server.store import DATABASE_URL_ENV, Job, Store
from rftlab.server.uploads import expire_uploads

log = logging.getLogger("rftlab.server")

WORKER_MODULE = "rftlab.server.worker"


def worker_command_matches(pid: int, job_seq: int) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return WORKER_MODULE.encode() in argv and str(job_seq).encode() in argv


def is_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def kill_worker(pid: int, job_seq: int) -> None:
    """SIGKILL the worker of job `job_seq` and its process group."""
    if worker_command_matches(pid, job_seq):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)
            else:  # started by an older server, in the server's own group
                os.kill(pid, signal.SIGKILL)


TICK_S = 0.5
HEARTBEAT_TIMEOUT_S = 120.0
MAX_INTERRUPTIONS = 5
STOP_GRACE_S = 10.0
CANCEL_GRACE_S = 6.0
"""A cancelled job's worker stops itself within a heartbeat; past this, the scheduler ends it."""
UPLOAD_SWEEP_S = 60.0


class Scheduler:
    def __init__(
        self, store: Store, layout: StateLayout, max_running: int, limits: ServerLimits | None = None
    ) -> None:
        self.store = store
        self.layout = layout
        self.max_running = max_running
        self.limits = limits or ServerLimits()
        self.storage = configured_storage(store, layout.root)
        self.executor = configured_executor(store, self.limits.worker_log_bytes, self.storage)
        self._children: dict[int, WorkerHandle] = {}
        self._cancel_seen: dict[int, float] = {}
        """Job seq -> when this scheduler first saw its cancel request while a worker still held it."""
        self._last_account = ""
        """The account whose job was started last: the next start goes to the account after it."""
        self._next_sweep = 0.0
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rftlab-scheduler", daemon=True)

    def start(self) -> None:
        self.recover_interrupted()
        expire_uploads(self.store, self.layout, self.limits.upload_ttl_s, at_start=True)
        self._next_sweep = time.monotonic() + UPLOAD_SWEEP_S
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        """Stop scheduling and end the workers; their jobs stay RUNNING in the database and the next start
        resumes them from their last checkpoints."""
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout=5)
        for process in self._children.values():
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for process in self._children.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def recover_interrupted(self) -> None:
        """At start: jobs left VALIDATING/RUNNING by a server that died go back to the queue."""
        with self.store.session() as session:
            for job in session.scalars(select(Job).where(Job.state.in_(ACTIVE_STATES))):
                if job.worker_pid:
                    kill_worker(job.worker_pid, job.seq)
                self._requeue(job, "the server stopped while it ran")

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.tick()
            except Exception:  # a busy database or a failed spawn must not end scheduling
                log.exception("scheduler tick failed")
            self._wake.wait(TICK_S)
            self._wake.clear()

    def tick(self) -> None:
        self._reap_exited()
        self._requeue_silent()
        self._end_cancelled()
        self._start_queued()
        if time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + UPLOAD_SWEEP_S
            expire_uploads(self.store, self.layout, self.limits.upload_ttl_s)

    def _end_cancelled(self) -> None:
        """A worker that has not ended its cancelled job within CANCEL_GRACE_S (stuck where its heartbeat cannot
        run) is killed with its process group."""
        now = time.monotonic()
        with self.store.reading() as session:
            cancelled = session.scalars(
                select(Job.seq).where(Job.state.in_(ACTIVE_STATES), Job.cancel_requested.is_(True))
            ).all()
        self._cancel_seen = {seq: self._cancel_seen.get(seq, now) for seq in cancelled}
        overdue = [seq for seq, seen in self._cancel_seen.items() if now - seen >= CANCEL_GRACE_S]
        if not overdue:
            return
        with self.store.session() as session:
            for job in session.scalars(select(Job).where(Job.seq.in_(overdue), Job.state.in_(ACTIVE_STATES))):
                if job.worker_pid:
                    kill_worker(job.worker_pid, job.seq)
                child = self._children.pop(job.seq, None)
                if child is not None:
                    child.kill()
                    child.wait()
                self._requeue(job, f"its worker did not stop within {CANCEL_GRACE_S:.0f} s")

    def _reap_exited(self) -> None:
        for seq, process in list(self._children.items()):
            code = process.poll()
            if code is None:
                continue
            del self._children[seq]
            with self.store.session() as session:
                job = session.get(Job, seq)
                if job is not None:
                    self._store_log(job)
                if job is None or job.state not in ACTIVE_STATES or job.worker_pid != process.pid:
                    continue  # finished normally (the worker recorded it) or deleted
                if code < 0:
                    self._requeue(job, f"its worker was killed by signal {-code}")
                elif code == UNAVAILABLE_EXIT:  # the storage failed it; its status message says how
                    said = job.status_message or ""
                    self._requeue(job, said if said.startswith(UNAVAILABLE_PREFIX) else "the storage failed")
                else:
                    self._fail(
                        job,
                        f"the worker exited with code {code} without finishing; see "
                        f"{self.storage.location(self._log(job))}",
                    )

    def _requeue_silent(self) -> None:
        """Workers this server did not start, or that stopped sending heartbeats."""
        stale_before = time.time() - HEARTBEAT_TIMEOUT_S
        with self.store.session() as session:
            for job in session.scalars(select(Job).where(Job.state.in_(ACTIVE_STATES))):
                child = self._children.get(job.seq)
                if child is not None:
                    alive = child.poll() is None
                else:
                    alive = bool(job.worker_pid) and is_alive(job.worker_pid)
                if alive and (job.heartbeat_at or 0) >= stale_before:
                    continue
                if child is not None:
                    child.kill()
                    child.wait()
                    del self._children[job.seq]
                elif alive:
                    kill_worker(job.worker_pid, job.seq)
                self._requeue(job, "its worker stopped answering")

    def _requeue(self, job: Job, why: str) -> None:
        job.worker_pid, job.heartbeat_at, job.update_time = None, None, time.time()
        if job.cancel_requested:
            job.state, job.status_message, job.completed_time = (
                CANCELLED,
                f"cancelled ({why})",
                time.time(),
            )
            return
        job.interruptions += 1
        if job.interruptions > MAX_INTERRUPTIONS:
            self._fail(
                job, f"interrupted {job.interruptions} times, last because {why}; :resume to try again"
            )
            return
        job.state = PENDING
        job.status_message = f"interrupted ({why}); queued to resume from its last checkpoint"

    def _fail(self, job: Job, message: str) -> None:
        job.state, job.status_code, job.status_message = FAILED, "INTERNAL", message
        job.worker_pid, job.heartbeat_at = None, None
        job.completed_time = job.update_time = time.time()

    def _log(self, job: Job) -> Path:
        return self.layout.job_dir(job.account_id, job.job_id) / "worker.log"

    def _store_log(self, job: Job) -> None:
        """With a storage URL, the log of a worker that ran here (the local executor) is copied there once the
        worker ends (a Ray node copies the logs of the workers it runs)."""
        path = self._log(job)
        if self.storage.remote and path.is_file():
            try:
                self.storage.put_file(path)
            except Exception:  # the log is a copy: it must not stop scheduling
                log.exception("copying %s to %s failed", path, self.storage.url)

    def _storage_env(self) -> dict[str, str]:
        """With a storage URL: what a worker on any node needs to reach it and to read its account's secrets."""
        if not self.storage.remote:
            return {}
        return {**storage_credentials(os.environ), SERVER_KEY_ENV: server_key_text(self.layout.root)}

    def _start_queued(self) -> None:
        while not self._stopping.is_set():
            with self.store.session() as session:
                running = dict(
                    session.execute(
                        select(Job.account_id, func.count())
                        .where(Job.state.in_(ACTIVE_STATES))
                        .group_by(Job.account_id)
                    ).all()
                )
                if sum(running.values()) >= self.max_running:
                    return
                per_account = self.limits.max_running_jobs_per_account or self.max_running
                waiting = session.scalars(
                    select(Job.account_id).where(Job.state == PENDING).distinct().order_by(Job.account_id)
                ).all()
                eligible = [account for account in waiting if running.get(account, 0) < per_account]
                if not eligible:
                    return
                account = next((a for a in eligible if a > self._last_account), eligible[0])
                job = session.scalars(
                    select(Job)
                    .where(Job.state == PENDING, Job.account_id == account)
                    .order_by(Job.queued_at, Job.seq)
                    .limit(1)
                ).one()
                if (waiting := self.executor.waiting_for(job)) is not None:
                    job.status_message = waiting  # first in line until the cluster has room for it
                    return
                job.state = VALIDATING
                job.status_message = "validating inputs"
                job.heartbeat_at = job.update_time = time.time()
                job.worker_pid = self._spawn(job).pid
                self._last_account = account

    def threads_per_job(self) -> int:
        """Each running job's share of the cores this server may use, so jobs running side by side do not
        oversubscribe them (torch's threads spin-wait and slow down badly when they do)."""
        return max(1, len(os.sched_getaffinity(0)) // max(1, self.max_running))

    def _spawn(self, job: Job) -> WorkerHandle:
        log_path = self._log(job)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        wandb_key = unseal(self.layout.root, job.secrets).get("wandbApiKey")
        process = self.executor.start(
            job,
            [
                sys.executable,
                "-m",
                WORKER_MODULE,
                "--job-seq",
                str(job.seq),
                "--state-dir",
                str(self.layout.root),
            ],
            clean_environment(
                **{
                    DATABASE_URL_ENV: self.store.url,
                    "PYTHONUNBUFFERED": "1",
                    "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS") or str(self.threads_per_job()),
                    **({"WANDB_API_KEY": wandb_key} if wandb_key else {}),
                    **self._storage_env(),
                }
            ),
            log_path,
        )
        self._children[job.seq] = process
        return process
