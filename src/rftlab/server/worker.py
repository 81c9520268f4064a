"""One job's worker process: `python -m rftlab.server.worker --job-seq N --state-dir DIR`.

Started by the scheduler with a clean environment (the database URL arrives in `RFTLAB_DATABASE_URL` and is removed
from the environment at once). It builds the engine's `JobInputs` from the stored job, runs
`rftlab.engine.job.run_job`, writes every step's metrics and the progress through the store as they arrive, sends a
heartbeat, and records how the job ended. It dies with the server (PR_SET_PDEATHSIG), so a killed server leaves no
orphan training; the next start resumes the job from its last checkpoint. A cancel ends it within a heartbeat.
When the storage keeps failing (server/job_storage.py), it ends with UNAVAILABLE_EXIT, saying why in the job's
status message, and the scheduler queues the job again.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import math
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from sqlalchemy import update

from rftlab.engine.api import EvaluatorCode, JobFailed, JobInputs, JobOutcome
from rftlab.fireworks.contract import CANCELLED, FAILED, RUNNING
from rftlab.server import wandb_sink
from rftlab.server.api_mcp_servers import tool_settings
from rftlab.server.api_secrets import account_secrets
from rftlab.server.dataset_check import read_rows
from rftlab.server.evaluator_build import BuildError
from rftlab.server.evaluator_env import configured_install_settings
from rftlab.server.job_spec import engine_settings
from rftlab.server.job_storage import StoringReporter, fetch_checkpoint, node_evaluator_python, retried
from rftlab.server.layout import StateLayout
from rftlab.server.rollouts import store_rollouts
from rftlab.server.server_key import SERVER_KEY_ENV, install_server_key
from rftlab.server.storage import (
    UNAVAILABLE_EXIT,
    UNAVAILABLE_PREFIX,
    Storage,
    StorageMissing,
    StorageUnavailable,
    configured_storage,
)
from rftlab.server.store import DATABASE_URL_ENV, Job, JobMetric, Resource, Store, find_resource

HEARTBEAT_INTERVAL_S = 2.0
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    parent = os.getppid()
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the server died before prctl took effect
        os._exit(1)


def finite(metrics: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe metrics: non-finite floats become null."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}


class StoreReporter:
    """The engine's Reporter, writing straight to the database."""

    def __init__(self, store: Store, job_seq: int) -> None:
        self.store = store
        self.job_seq = job_seq
        self.stop_seen = False

    def _mine(self):
        return update(Job).where(Job.seq == self.job_seq, Job.worker_pid == os.getpid())

    def step(self, metrics: dict[str, float]) -> None:
        with self.store.session() as session:
            session.merge(
                JobMetric(job_seq=self.job_seq, step=int(metrics["step"]), metrics=finite(dict(metrics)))
            )
            session.execute(self._mine().values(update_time=time.time()))

    def progress(self, percent: float, epoch: int, step: int, total_steps: int, output_tokens: int) -> None:
        progress = {
            "percent": max(0, min(100, round(percent))),
            "epoch": epoch,
            "step": step,
            "totalSteps": total_steps,
            "outputTokens": output_tokens,
        }
        with self.store.session() as session:
            session.execute(self._mine().values(progress=progress, update_time=time.time()))

    def rollouts(self, kind: str, step: int, rollouts: list[dict[str, Any]]) -> None:
        """A step's (or an eval pass's) rollouts, kept as `rftlab serve --keep-rollouts` says."""
        store_rollouts(self.store, self.job_seq, kind, step, rollouts)

    def should_stop(self) -> bool:
        with self.store.reading() as session:
            job = session.get(Job, self.job_seq)
            stop = job is None or job.cancel_requested
        self.stop_seen = self.stop_seen or stop
        return stop

    def note(self, message: str) -> None:
        """The running job's status message; a cancel's message (and any state but RUNNING) is kept."""
        with self.store.session() as session:
            session.execute(
                self._mine()
                .where(Job.state == RUNNING, Job.cancel_requested.is_(False))
                .values(status_message=message, update_time=time.time())
            )


def _heartbeat(store: Store, job_seq: int) -> None:
    """Every HEARTBEAT_INTERVAL_S: tell the scheduler we live, and see whether the job still wants us. A cancel
    (or a delete, or the job given to another worker) ends this process at once, mid-chunk: the last complete
    checkpoint is what a resume continues from."""
    while True:
        time.sleep(HEARTBEAT_INTERVAL_S)
        try:
            with store.session() as session:
                mine = session.execute(
                    update(Job)
                    .where(Job.seq == job_seq, Job.worker_pid == os.getpid())
                    .values(heartbeat_at=time.time())
                ).rowcount
                cancelled = mine == 1 and session.get(Job, job_seq).cancel_requested
        except Exception as error:  # a busy database must not kill the job; the next beat retries
            print(f"heartbeat failed: {error}", file=sys.stderr, flush=True)
            continue
        if mine == 0 or cancelled:
            _end_now(store, job_seq, cancelled)


def _end_now(store: Store, job_seq: int, cancelled: bool) -> None:
    """Kill what this worker started (evaluator sandboxes lead their own process groups), record a cancel, and
    end this process with its whole process group."""
    print(
        "the job was cancelled: stopping now" if cancelled else "the job is no longer ours", file=sys.stderr
    )
    for pid in _child_pids():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
    if cancelled:
        _finish(store, job_seq, CANCELLED, "cancelled; the last checkpoint is kept (:resume continues it)")
    sys.stderr.flush()
    if os.getpgrp() == os.getpid():
        os.killpg(os.getpid(), signal.SIGKILL)
    os._exit(0)


def _child_pids() -> list[int]:
    me = str(os.getpid())
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[1] == me:
            children.append(int(stat.parent.name))
    return children


def _wait_until_claimed(store: Store, job_seq: int, timeout_s: float = 30.0) -> Job:
    """The scheduler records our pid right after starting us; work only once it has."""
    deadline = time.monotonic() + timeout_s
    while True:
        with store.reading() as session:
            job = session.get(Job, job_seq)
        if job is None:
            raise SystemExit(f"job #{job_seq} no longer exists")
        if job.worker_pid == os.getpid():
            return job
        if time.monotonic() > deadline:
            raise SystemExit(f"job #{job_seq} was not assigned to this worker (pid {os.getpid()})")
        time.sleep(0.1)


def _resource(store: Store, account_id: str, kind: str, name: str) -> Resource:
    resource_id = name.rsplit("/", 1)[-1]
    with store.reading() as session:
        resource = find_resource(session, account_id, kind, resource_id)
    if resource is None:
        raise JobFailed(f"{name} no longer exists")
    return resource


def build_inputs(store: Store, storage: Storage, job: Job) -> JobInputs:
    """What the engine needs for `job`, fetched from the storage into this node's copy when it has a URL;
    JobFailed when an input is gone or a setting cannot run here."""
    spec, account, layout = job.spec, job.account_id, StateLayout(storage.root)

    def rows(name: str) -> list[dict[str, Any]]:
        _resource(store, account, "datasets", name)
        path = layout.dataset_file(account, name.rsplit("/", 1)[-1])
        retried(storage, "fetching", path, lambda: storage.fetch_file(path))
        return read_rows(path)

    evaluator = _resource(store, account, "evaluators", spec["evaluator"])
    entry_file, _, entry_func = evaluator.body["entryPoint"].partition("::")
    code_root = layout.evaluator_code(account, evaluator.resource_id)
    retried(storage, "fetching", code_root, lambda: storage.fetch_dir(code_root))
    try:
        python = node_evaluator_python(storage, code_root, configured_install_settings(store))
    except BuildError as error:
        raise JobFailed(f"evaluator {spec['evaluator']}: {error}") from None
    training = spec["trainingConfig"]
    base_model, warm_start_adapter = training.get("baseModel"), None
    if training.get("warmStartFrom"):
        start = _resource(store, account, "models", training["warmStartFrom"])
        base_model, warm_start_adapter = start.body["baseModel"], layout.model_dir(account, start.resource_id)
        adapter = warm_start_adapter
        retried(storage, "fetching", adapter, lambda: storage.fetch_dir(adapter))
    job_dir = layout.job_dir(account, job.job_id)
    return JobInputs(
        settings=engine_settings(spec, tool_settings(store, layout, account, spec)),
        train_rows=rows(spec["dataset"]),
        eval_rows=rows(spec["evaluationDataset"]) if spec.get("evaluationDataset") else None,
        evaluator=EvaluatorCode(
            root=code_root,
            entry_file=entry_file,
            entry_func=entry_func,
            python=python,
            env=account_secrets(store, layout, account),
        ),
        base_model=base_model,
        warm_start_adapter=warm_start_adapter,
        checkpoint_dir=job_dir / "checkpoints",
        output_dir=layout.model_dir(account, training["outputModel"].rsplit("/", 1)[-1]),
    )


def _register_model(store: Store, storage: Storage, job: Job, inputs: JobInputs) -> None:
    config_file = inputs.output_dir / "adapter_config.json"
    if not config_file.is_file():
        return
    retried(storage, "storing", inputs.output_dir, lambda: storage.put_dir(inputs.output_dir))
    adapter = json.loads(config_file.read_text())
    output_name = job.spec["trainingConfig"]["outputModel"]
    model_id = output_name.rsplit("/", 1)[-1]
    body = {
        "name": output_name,
        "displayName": model_id,
        "kind": "HF_PEFT_ADDON",
        "state": "READY",
        "status": {"code": "OK", "message": ""},
        "baseModel": inputs.base_model,
        "peftDetails": {
            "baseModel": inputs.base_model,
            "r": adapter.get("r", inputs.settings.training.lora_rank),
            "targetModules": sorted(adapter.get("target_modules") or []),
        },
        "fineTuningJob": f"accounts/{job.account_id}/reinforcementFineTuningJobs/{job.job_id}",
        "adapterPath": storage.location(inputs.output_dir),
        "createdBy": job.account_id,
    }
    with store.session() as session:
        existing = find_resource(session, job.account_id, "models", model_id)
        if existing is None:
            session.add(
                Resource(
                    account_id=job.account_id,
                    kind="models",
                    resource_id=model_id,
                    display_name=model_id,
                    state="READY",
                    body=body,
                )
            )
        else:
            existing.body, existing.update_time = body, time.time()


def _finish(
    store: Store, job_seq: int, state: str, message: str, code: str = "OK", metrics: dict | None = None
) -> None:
    values: dict[str, Any] = {
        "state": state,
        "status_code": code,
        "status_message": message,
        "worker_pid": None,
        "heartbeat_at": None,
        "completed_time": time.time(),
        "update_time": time.time(),
    }
    if metrics is not None:
        values["output_metrics"] = finite(metrics)
    with store.session() as session:
        session.execute(update(Job).where(Job.seq == job_seq, Job.worker_pid == os.getpid()).values(**values))


def _set_running(store: Store, job: Job) -> bool:
    """VALIDATING -> RUNNING, unless a cancel arrived meanwhile."""
    message = "training"
    if job.interruptions:
        message += f" (resumed from the last checkpoint after {job.interruptions} interruption(s))"
    with store.session() as session:
        result = session.execute(
            update(Job)
            .where(Job.seq == job.seq, Job.worker_pid == os.getpid(), Job.cancel_requested.is_(False))
            .values(state=RUNNING, status_message=message, update_time=time.time())
        )
        return result.rowcount == 1


def _storage_failed(store: Store, job_seq: int, error: StorageUnavailable) -> int:
    """Say why in the worker's log and the job's status message (the scheduler's reason to queue it again)."""
    message = f"{UNAVAILABLE_PREFIX}{error}"
    print(f"{message}\nending this worker: the job goes back to the queue", file=sys.stderr, flush=True)
    with store.session() as session:
        session.execute(
            update(Job)
            .where(Job.seq == job_seq, Job.worker_pid == os.getpid())
            .values(status_message=message, update_time=time.time())
        )
    return UNAVAILABLE_EXIT


def run(store: Store, storage: Storage, job_seq: int) -> int:
    """The job's run; this process's exit status (UNAVAILABLE_EXIT when the storage failed it)."""
    job = _wait_until_claimed(store, job_seq)
    layout = StateLayout(storage.root)
    threads = os.environ.get("OMP_NUM_THREADS", "one per core")
    print(
        f"worker {os.getpid()} started on job {job.job_id} (torch threads: {threads})",
        file=sys.stderr,
        flush=True,
    )
    threading.Thread(target=_heartbeat, args=(store, job_seq), daemon=True).start()
    reporter = StoreReporter(store, job_seq)
    try:
        inputs = build_inputs(store, storage, job)
        stored_checkpoint = fetch_checkpoint(storage, inputs.checkpoint_dir)
        inputs.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        if not _set_running(store, job):
            _finish(store, job_seq, CANCELLED, "cancelled before training started")
            return 0
        from rftlab.engine.job import run_job  # heavy (torch): imported once the inputs are usable

        job_dir = layout.job_dir(job.account_id, job.job_id)
        storing = StoringReporter(reporter, storage, inputs.checkpoint_dir, stored_checkpoint)
        with wandb_sink.reporting(store, job, storing, job_dir) as tracked:
            outcome: JobOutcome = run_job(inputs, tracked)
            tracked.finish(outcome)
    except StorageUnavailable as error:
        return _storage_failed(store, job_seq, error)
    except (JobFailed, StorageMissing) as error:
        _finish(store, job_seq, FAILED, str(error), code="FAILED_PRECONDITION")
        return 0
    except Exception as error:
        traceback.print_exc()
        _finish(
            store,
            job_seq,
            FAILED,
            f"internal error: {type(error).__name__}: {error}",
            code="INTERNAL",
        )
        return 0
    if reporter.stop_seen:
        _finish(
            store,
            job_seq,
            CANCELLED,
            "cancelled; the last checkpoint is kept (:resume continues it)",
        )
        return 0
    try:
        _register_model(store, storage, job, inputs)
    except StorageUnavailable as error:
        return _storage_failed(store, job_seq, error)
    _finish(store, job_seq, outcome.state, outcome.message, metrics=outcome.final_metrics)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rftlab-worker")
    parser.add_argument("--job-seq", type=int, required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help="with a storage URL: this node's copy of it"
    )
    args = parser.parse_args(argv)
    die_with_parent()
    database_url = os.environ.pop(DATABASE_URL_ENV)
    server_key = os.environ.pop(SERVER_KEY_ENV, None)
    store = Store(database_url)
    storage = configured_storage(store, args.state_dir)
    if storage.remote and args.cache_dir:
        storage = storage.on(args.cache_dir)
    if server_key:
        install_server_key(storage.root, server_key)
    return run(store, storage, args.job_seq)


if __name__ == "__main__":
    raise SystemExit(main())
