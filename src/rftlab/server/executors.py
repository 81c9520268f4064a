"""Where the scheduler runs job workers: `LocalExecutor` starts each as a subprocess of the server (the default);
`RayExecutor` starts each inside a Ray actor placed on a cluster node with the resources the job needs.

Both give the scheduler a `subprocess.Popen`-like handle (`pid`, `poll`, `wait`, `send_signal`, `kill`), so the
scheduler's liveness rules (exit status, heartbeat, requeue) are the same for both. On Ray the worker is still
`python -m rftlab.server.worker`, started by a small actor (`JobProcess`) on the node Ray picked: its log goes to
the job's worker.log on the shared state dir (capped as locally), and it dies with the actor (PR_SET_PDEATHSIG), so killing the
actor (cancel, or a node that dies) ends the worker and, through Ray's ownership, the rollout workers it started.
A worker whose actor died without an exit status reads as killed by SIGKILL: the scheduler requeues its job,
which resumes from its last checkpoint on whatever node has room.

The executor is a server setting (`rftlab serve --executor local|ray`), kept in the database like the other
settings job workers read.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy.orm import Session

from rftlab.engine.rollout_workers import RAY_ADDRESS_ENV, ROLLOUT_WORKERS_ENV, WORKER_CPUS
from rftlab.server.capped_log import capped_log_pipe
from rftlab.server.job_storage import LogCopy
from rftlab.server.placement import Amounts, add, describe, largest_room, node_room, place
from rftlab.server.ray_view import cluster_view
from rftlab.server.storage import Storage, storage_credentials
from rftlab.server.store import Job, ServerSetting, Store

EXECUTOR_SETTING = "executor"
EXECUTORS = ("local", "ray")
EXECUTOR_ENV = "RFTLAB_EXECUTOR"
RAY_INSTALL = "pip install -e '.[local,ray]' in the repository"
START_TIMEOUT_S = 60.0
"""How long a job's actor may take to be placed and start its worker before the start counts as failed."""


class WorkerHandle(Protocol):
    pid: int

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def send_signal(self, sig: int) -> None: ...

    def kill(self) -> None: ...


class Executor(Protocol):
    def waiting_for(self, job: Job) -> str | None:
        """None when `job` can start now (the scheduler's own `max_running` aside), else what it waits for."""

    def start(self, job: Job, argv: list[str], env: dict[str, str], log_path: Path) -> WorkerHandle:
        """Start the worker command `argv` (stdout and stderr appended to `log_path`) for `job`."""


def start_worker_process(
    argv: list[str], env: dict[str, str], log_path: Path, max_log_bytes: int
) -> subprocess.Popen:
    """The worker command in its own session (stopping its process group ends all it started), its output into
    `log_path`, capped at `max_log_bytes`."""
    output = capped_log_pipe(log_path, max_log_bytes)
    try:
        return subprocess.Popen(
            argv,
            cwd=log_path.parent,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            start_new_session=True,
        )
    finally:
        os.close(output)


class LocalExecutor:
    """The default: the worker is a child process of the server."""

    def __init__(self, max_log_bytes: int) -> None:
        self.max_log_bytes = max_log_bytes

    def waiting_for(self, job: Job) -> str | None:
        return None

    def start(self, job: Job, argv: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
        return start_worker_process(argv, env, log_path, self.max_log_bytes)


@dataclass(frozen=True)
class ResourceOverrides:
    """What `rftlab serve --job-cpus/--job-gpus/--job-memory-gb` set for every job; None: derived from the job."""

    cpus: float | None = None
    gpus: float | None = None
    memory_gb: float | None = None


@dataclass(frozen=True)
class JobResources:
    cpus: float
    gpus: float
    memory_bytes: int | None
    rollout_workers: int
    """Rollout workers the job's sampling is split over (its `nodeCount`): each a Ray actor of its own when
    there are two or more; one samples in the job's worker."""

    @classmethod
    def of(cls, spec: dict[str, Any], overrides: ResourceOverrides) -> JobResources:
        """Derived: one CPU; one GPU for a base model named by Fireworks id or hub id (too big for a CPU), none
        for the bundled tiny model or a local folder; no memory reservation. Overrides win."""
        base_model = str(spec.get("trainingConfig", {}).get("baseModel") or "")
        wants_gpu = "/" in base_model and not base_model.startswith(("/", ".", "~"))
        memory = overrides.memory_gb
        return cls(
            cpus=overrides.cpus if overrides.cpus is not None else 1.0,
            gpus=overrides.gpus if overrides.gpus is not None else (1.0 if wants_gpu else 0.0),
            memory_bytes=int(memory * 2**30) if memory else None,
            rollout_workers=max(1, int(spec.get("nodeCount") or 1)),
        )

    @property
    def rollout_actors(self) -> int:
        """Rollout workers that are actors of their own (none when the job's worker samples itself)."""
        return self.rollout_workers if self.rollout_workers > 1 else 0

    def worker_needs(self) -> Amounts:
        """What the job's worker actor needs on its node."""
        needs = {"CPU": self.cpus, "GPU": self.gpus, "memory": float(self.memory_bytes or 0)}
        return {name: amount for name, amount in needs.items() if amount}

    def rollout_worker_needs(self) -> Amounts:
        """What each rollout-worker actor needs on its node: a CPU, and a whole GPU when the job's worker has one
        (the engine's `rollout_sampler`)."""
        return {"CPU": WORKER_CPUS, **({"GPU": 1.0} if self.gpus else {})}


def connect_ray(address: str) -> Any:
    """This process as a client of the Ray cluster at `address` (once); the `ray` module."""
    try:
        import ray
    except ImportError as error:
        raise RuntimeError(f"rftlab serve --executor ray needs Ray: {RAY_INSTALL}") from error
    if not ray.is_initialized():
        try:
            ray.init(address=address, log_to_driver=False, logging_level="WARNING")
        except ConnectionError as error:
            raise RuntimeError(
                f"no Ray cluster answers at --ray-address {address} ({error}); start one (`ray start --head`) "
                "or give the address of its head node"
            ) from error
    return ray


class RayExecutor:
    def __init__(
        self, address: str, overrides: ResourceOverrides, max_log_bytes: int, storage: Storage | None = None
    ) -> None:
        self.address, self.overrides, self.max_log_bytes = address, overrides, max_log_bytes
        self.storage = storage or Storage()
        """With a storage URL, each worker keeps its files in its node's cache and its log is copied there."""
        self._actor_class: Any = None
        self._holding: list[tuple[RayWorker, JobResources]] = []
        """The workers started here that still run, with what their jobs need."""
        self._driver_pids: dict[str, int] = {}
        """Ray job id -> pid of its driver (a job worker connected to the cluster): the owners of rollout workers."""

    def _connect(self) -> Any:
        ray = connect_ray(self.address)
        if self._actor_class is None:
            self._actor_class = ray.remote(max_restarts=0)(JobProcess)
        return ray

    def waiting_for(self, job: Job) -> str | None:
        """Room on one node for the job's worker and on any nodes for its rollout workers. Ray's view of each node
        lags the actors placed a moment ago and knows nothing of the rollout workers a running job has yet to
        start: so each node's room is also counted after what this server's running jobs hold on it, and their
        rollout workers not started yet have their room set aside first."""
        self._connect()
        self._holding = [(worker, needs) for worker, needs in self._holding if worker.returncode is None]
        owners = {(worker.pid, worker.node) for worker, needs in self._holding if needs.rollout_actors}
        view = cluster_view(self._driver_pids, owners)
        held: dict[str, Amounts] = {}
        reserved: list[Amounts] = []
        for worker, needs in self._holding:
            add(held, worker.node, needs.worker_needs())
            rollout_nodes = view.rollout_workers.get((worker.pid, worker.node), [])
            for node in rollout_nodes[: needs.rollout_actors]:
                add(held, node, needs.rollout_worker_needs())
            reserved += [needs.rollout_worker_needs()] * max(0, needs.rollout_actors - len(rollout_nodes))
        room = node_room(view.available, view.total, held)
        needs = JobResources.of(job.spec, self.overrides)
        worker, rollout_worker = needs.worker_needs(), needs.rollout_worker_needs()
        if place(room, worker, rollout_worker, needs.rollout_actors, reserved) is not None:
            return None
        wanted = f"{describe(worker)} on one node for its worker"
        if needs.rollout_actors:
            wanted += (
                f" and {needs.rollout_actors} rollout workers of {describe(rollout_worker)} on any nodes"
            )
        names = [name for name in ("CPU", "GPU", "memory") if name in worker or name in rollout_worker]
        return (
            f"queued: waiting for room on the Ray cluster: it needs {wanted}; the most free on one node is "
            f"{describe(largest_room(room, reserved, names))} (of {len(room)} nodes, after what running jobs hold "
            "or will hold; --job-cpus/--job-gpus/--job-memory-gb and nodeCount set what a job needs)"
        )

    def start(self, job: Job, argv: list[str], env: dict[str, str], log_path: Path) -> RayWorker:
        ray = self._connect()
        resources = JobResources.of(job.spec, self.overrides)
        actor = self._actor_class.options(
            num_cpus=resources.cpus,
            num_gpus=resources.gpus,
            memory=resources.memory_bytes,
            name=f"rftlab-job-{job.seq}-{time.time_ns()}",
        ).remote()
        env = {
            **env,
            "OMP_NUM_THREADS": str(max(1, math.floor(resources.cpus))),
            ROLLOUT_WORKERS_ENV: str(resources.rollout_workers),
        }
        try:
            log_key = self.storage.key(log_path) if self.storage.remote else None
            started = actor.start.remote(
                argv[1:], env, str(log_path), self.max_log_bytes, self.storage.url, log_key
            )
            pid, node = ray.get(started, timeout=START_TIMEOUT_S)
        except Exception:
            ray.kill(actor, no_restart=True)
            raise
        worker = RayWorker(ray, actor, pid, node)
        self._holding.append((worker, resources))
        return worker


class RayWorker:
    """A job worker running under a `JobProcess` actor, seen as a Popen."""

    def __init__(self, ray: Any, actor: Any, pid: int, node: str) -> None:
        self._ray, self._actor, self.pid, self.node = ray, actor, pid, node
        self._pending: Any = None
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is not None:
            return self.returncode
        if self._pending is None:
            self._pending = self._actor.poll.remote()
        ready, _ = self._ray.wait([self._pending], timeout=0)
        if not ready:
            return None
        try:
            code = self._ray.get(self._pending)
        except self._ray.exceptions.RayActorError:  # its node died, or the actor was killed
            code = -signal.SIGKILL
        self._pending = None
        if code is not None:
            self.returncode = code
            self._ray.kill(self._actor, no_restart=True)
        return code

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"job worker {self.pid} on node {self.node}", timeout or 0)
            time.sleep(0.1)
        return code

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            self._actor.send_signal.remote(sig)

    def kill(self) -> None:
        if self.returncode is None:
            self._ray.kill(self._actor, no_restart=True)


class JobProcess:
    """The Ray actor holding one job's worker process on its node (its methods run on the actor's main thread,
    the worker's parent, so PR_SET_PDEATHSIG ties the worker to the actor)."""

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        self.log_copy: LogCopy | None = None

    def start(
        self,
        args: list[str],
        env: dict[str, str],
        log_path: str,
        max_log_bytes: int,
        storage_url: str | None = None,
        log_key: str | None = None,
    ) -> tuple[int, str]:
        """Start the worker (`args` after the interpreter: this node's own runs it); its pid and this node's id.
        With a storage URL, the worker keeps its files in this node's cache and its log is copied to the storage."""
        import ray

        context = ray.get_runtime_context()
        env = {**env, RAY_ADDRESS_ENV: context.gcs_address}
        log = Path(log_path)
        if storage_url and log_key:
            self.log_copy = LogCopy(storage_url, log_key, context.get_node_id())
            log = self.log_copy.path
            args = [*args, "--cache-dir", str(self.log_copy.storage.root)]
            env = {**storage_credentials(os.environ), **env}
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as note:
            note.write(f"job worker starting on Ray node {context.get_node_id()} ({platform.node()})\n")
        self.process = start_worker_process([sys.executable, *args], env, log, max_log_bytes)
        return self.process.pid, context.get_node_id()

    def poll(self, timeout_s: float = 1.0) -> int | None:
        """The worker's exit status, waiting up to `timeout_s` for it; None while it runs."""
        assert self.process is not None
        try:
            code = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            code = None
        if self.log_copy is not None:
            self.log_copy.copy(final=code is not None)
        return code

    def send_signal(self, sig: int) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, sig)


@dataclass(frozen=True)
class ExecutorSetting:
    kind: str = "local"
    """"local" or "ray"."""
    ray_address: str | None = None
    cpus: float | None = None
    gpus: float | None = None
    memory_gb: float | None = None

    def executor(self, max_log_bytes: int, storage: Storage | None = None) -> Executor:
        if self.kind == "ray":
            overrides = ResourceOverrides(self.cpus, self.gpus, self.memory_gb)
            return RayExecutor(self.ray_address or "auto", overrides, max_log_bytes, storage)
        return LocalExecutor(max_log_bytes)


def add_executor_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("executor (where job workers run)")
    group.add_argument(
        "--executor",
        choices=EXECUTORS,
        default=os.environ.get(EXECUTOR_ENV) or "local",
        help=f"local: subprocesses of this server; ray: actors on a Ray cluster (default: ${EXECUTOR_ENV}, "
        "else local)",
    )
    group.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDR",
        help="the Ray cluster (host:port of its head); default: $RAY_ADDRESS, else 'auto'",
    )
    group.add_argument("--job-cpus", type=float, default=None, help="CPUs per job (ray; default 1)")
    group.add_argument(
        "--job-gpus", type=float, default=None, help="GPUs per job (ray; default 1 for hub models, else 0)"
    )
    group.add_argument(
        "--job-memory-gb", type=float, default=None, help="memory per job (ray; default: none)"
    )


def executor_setting_from(args: argparse.Namespace) -> ExecutorSetting:
    """The executor setting the flags ask for; ValueError naming the flag when one cannot be used."""
    for flag in ("job_cpus", "job_gpus", "job_memory_gb"):
        value = getattr(args, flag)
        if value is not None and value < 0:
            raise ValueError(f"--{flag.replace('_', '-')} must be 0 or more, not {value}")
    if args.executor not in EXECUTORS:
        raise ValueError(
            f"--executor (or ${EXECUTOR_ENV}) must be one of {', '.join(EXECUTORS)}, not {args.executor!r}"
        )
    if args.executor == "local":
        return ExecutorSetting()
    address = args.ray_address or os.environ.get(RAY_ADDRESS_ENV) or "auto"
    # the room check reads each node from the cluster's control store, out of a Ray Client's reach
    if address.startswith("ray://"):
        raise ValueError(
            f"--ray-address (or ${RAY_ADDRESS_ENV}) {address}: Ray Client addresses are not supported; give the "
            "head node's host:port and run rftlab serve where it reaches the cluster"
        )
    try:
        import ray  # noqa: F401
    except ImportError:
        raise ValueError(f"--executor ray needs Ray: {RAY_INSTALL}") from None
    return ExecutorSetting("ray", address, args.job_cpus, args.job_gpus, args.job_memory_gb)


def connect_executor(setting: ExecutorSetting) -> None:
    """Reach the cluster now, so a bad address stops `rftlab serve` at start (RuntimeError saying why)."""
    if setting.kind == "ray":
        connect_ray(setting.ray_address or "auto")


def save_executor_setting(store: Store, setting: ExecutorSetting) -> None:
    with store.session() as session:
        session.merge(ServerSetting(name=EXECUTOR_SETTING, value=asdict(setting)))


def load_executor_setting(session: Session) -> ExecutorSetting:
    stored = session.get(ServerSetting, EXECUTOR_SETTING)
    return ExecutorSetting(**stored.value) if stored is not None else ExecutorSetting()


def configured_executor(store: Store, max_log_bytes: int, storage: Storage | None = None) -> Executor:
    """The executor `rftlab serve` was started with (local when none was saved); worker logs capped at
    `max_log_bytes`; `storage`: where job files live when not in the state dir."""
    with store.reading() as session:
        return load_executor_setting(session).executor(max_log_bytes, storage)
