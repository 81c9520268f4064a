"""The user's evaluator, run in a pool of separate worker processes.

Each worker process (evaluator_worker.py) serves one call at a time. One dispatcher thread hands queued calls
to idle workers and reads their answers as they arrive (a selector over the workers' pipes), so several calls
run at once while the caller keeps generating, and a fast evaluator costs a pipe round trip per call rather
than a thread hand-off and a timer thread per call (64 exact-match calls through 8 workers: about 18 ms with a
thread per call, 3-5 ms this way). A call that raises, outlives its timeout (its process is killed), crashes its process, or returns a
non-finite, out-of-range or self-declared invalid score yields an invalid `Score`, never an exception.
Workers get an environment without the server's secrets.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import selectors
import subprocess
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rftlab.engine.api import EvaluatorCode, JobFailed

WORKER_SCRIPT = Path(__file__).with_name("evaluator_worker.py")
SECRET_ENV_PREFIXES = ("FIREWORKS_", "WANDB_", "RFTLAB_", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
SECRET_ENV_MARKERS = ("API_KEY", "SECRET", "PASSWORD", "TOKEN")


@dataclass(frozen=True)
class Score:
    value: float | None
    """The reward in [0, 1]; None when the rollout is invalid."""
    reason: str = ""
    error: str = ""
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return self.value is not None


def worker_environment() -> dict[str, str]:
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(SECRET_ENV_PREFIXES)
        and not any(marker in name for marker in SECRET_ENV_MARKERS)
    }


def checked_score(result: dict[str, Any]) -> Score:
    value, reason = result["score"], result["reason"]
    if not result["is_score_valid"]:
        return Score(None, reason, f"the evaluator marked its score invalid: {reason or 'no reason given'}")
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        return Score(None, reason, f"the evaluator returned score {value!r}, outside [0, 1]")
    return Score(value, reason, metrics=result["metrics"])


@dataclass
class _Call:
    payload: bytes
    future: Future[Score] = field(default_factory=Future)
    started: float = 0.0
    deadline: float = 0.0


def _score(answer: dict[str, Any]) -> Score:
    if not answer["ok"]:
        return Score(None, error=answer["error"])
    return checked_score(answer["result"])


class _Worker:
    def __init__(self, code: EvaluatorCode):
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER_SCRIPT), str(code.root), code.entry_file, code.entry_func],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=worker_environment(),
        )
        self.fd = self.process.stdout.fileno()
        self.call: _Call | None = None
        self._unread = b""

    def wait_ready(self) -> None:
        lines = self.read_lines()
        while lines == []:
            lines = self.read_lines()
        answer = json.loads(lines[0]) if lines else {"ready": False, "error": "the worker exited at start"}
        if not answer["ready"]:
            self.kill()
            raise JobFailed(f"the evaluator cannot be loaded: {answer['error']}")

    def read_lines(self) -> list[bytes] | None:
        """The complete lines that have arrived (one read; it blocks only if nothing has); None at end of file."""
        data = os.read(self.fd, 1 << 16)
        if not data:
            return None
        *lines, self._unread = (self._unread + data).split(b"\n")
        return lines

    def send(self, call: _Call, timeout_s: float) -> bool:
        """Start `call` on this idle worker; False if the worker had died (the call was not delivered)."""
        try:
            self.process.stdin.write(call.payload)
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            return False
        call.started = time.monotonic()
        call.deadline = call.started + timeout_s
        self.call = call
        return True

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            with contextlib.suppress(OSError):
                stream.close()


class EvaluatorPool:
    """`submit(messages, ground_truth, fields)` -> Future[Score]; up to `concurrency` calls run at once.

    `INITIAL_WORKERS` worker processes start with the pool (an evaluator that cannot load fails the job at
    once). When calls wait for a busy worker while calls take `SLOW_CALL_S` or more (an evaluator that waits on
    a remote judge or a sandbox), more workers start in the background, `STARTS_AT_ONCE` at a time, until there
    is one per call in flight (at most `concurrency`), so the waits overlap instead of queueing. An evaluator
    that answers in a millisecond keeps the initial processes. A worker that dies or is killed for a timeout is
    replaced the same way.
    """

    INITIAL_WORKERS = 8
    SLOW_CALL_S = 0.02
    STARTS_AT_ONCE = 2

    def __init__(self, code: EvaluatorCode, concurrency: int, timeout_s: float):
        self.code, self.timeout_s, self.concurrency = code, timeout_s, concurrency
        workers = [_Worker(code) for _ in range(min(concurrency, self.INITIAL_WORKERS))]
        try:
            for worker in workers:
                worker.wait_ready()
        except JobFailed:
            for worker in workers:
                worker.kill()
            raise
        self._lock = threading.Lock()
        self._queued: deque[_Call] = deque()
        self._arrived: list[_Worker] = workers
        """Ready workers the dispatcher has not taken in yet (guarded by the lock)."""
        self._idle: list[_Worker] = []
        self._busy: dict[int, _Worker] = {}
        """Workers running a call (their `call`), by pipe fd."""
        self._started = self._wanted = len(workers)
        self._last_call_s = 0.0
        self._starters: list[threading.Thread] = []
        self._closed = False
        self._broken: JobFailed | None = None
        """Set when no worker is left and a new one cannot load: every call then fails with this."""
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_write, False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_read, selectors.EVENT_READ)
        self._dispatcher = threading.Thread(target=self._dispatch, name="evaluator-dispatch", daemon=True)
        self._dispatcher.start()

    def submit(
        self, messages: list[dict[str, Any]], ground_truth: Any, fields: dict[str, Any]
    ) -> Future[Score]:
        payload = json.dumps({"messages": messages, "ground_truth": ground_truth, "fields": fields}) + "\n"
        call = _Call(payload.encode())
        with self._lock:
            if self._broken is not None:
                call.future.set_exception(self._broken)
                return call.future
            self._queued.append(call)
        self._wake()
        return call.future

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):  # a full pipe already wakes the dispatcher
            os.write(self._wake_write, b"!")

    def _dispatch(self) -> None:
        try:
            while not self._closed:
                self._take_in_arrivals()
                self._start_queued_calls()
                for key, _ in self._selector.select(self._seconds_to_next_deadline()):
                    if key.data is None:
                        os.read(self._wake_read, 1 << 16)
                    else:
                        self._read(key.data)
                self._expire_overdue_calls()
        except Exception as error:  # a bug here must not leave callers waiting forever
            with self._lock:
                waiting = [*self._queued, *(worker.call for worker in self._busy.values())]
                self._queued.clear()
            for call in waiting:
                call.future.set_exception(error)
            raise

    def _take_in_arrivals(self) -> None:
        with self._lock:
            arrived, self._arrived = self._arrived, []
        for worker in arrived:
            self._selector.register(worker.fd, selectors.EVENT_READ, worker)
            self._idle.append(worker)

    def _start_queued_calls(self) -> None:
        while self._idle:
            with self._lock:
                if not self._queued:
                    return
                call = self._queued.popleft()
            worker = self._idle.pop()
            if worker.send(call, self.timeout_s):
                self._busy[worker.fd] = worker
            else:
                with self._lock:
                    self._queued.appendleft(call)
                self._retire(worker)
        with self._lock:
            waiting = len(self._queued)
        if waiting:
            self._grow(waiting + len(self._busy))

    def _read(self, worker: _Worker) -> None:
        lines = worker.read_lines()
        if lines is None:
            self._retire(worker)
            if worker.call is not None:
                message = f"the evaluator process died (exit code {worker.process.returncode})"
                worker.call.future.set_result(Score(None, error=message))
            return
        for line in lines:
            call, worker.call = worker.call, None
            if call is None:
                continue
            self._last_call_s = time.monotonic() - call.started
            del self._busy[worker.fd]
            self._idle.append(worker)
            call.future.set_result(_score(json.loads(line)))

    def _seconds_to_next_deadline(self) -> float | None:
        deadlines = [worker.call.deadline for worker in self._busy.values()]
        return max(0.0, min(deadlines) - time.monotonic()) if deadlines else None

    def _expire_overdue_calls(self) -> None:
        now = time.monotonic()
        for worker in [w for w in self._busy.values() if w.call.deadline <= now]:
            self._retire(worker)
            worker.call.future.set_result(
                Score(None, error=f"the evaluator call timed out after {self.timeout_s:g} s")
            )

    def _retire(self, worker: _Worker) -> None:
        """Forget a dead or overdue worker (killing it) and start a replacement."""
        self._selector.unregister(worker.fd)  # before the kill closes the fd, whose number may then be reused
        self._busy.pop(worker.fd, None)
        with contextlib.suppress(ValueError):
            self._idle.remove(worker)
        worker.kill()
        with self._lock:
            self._started -= 1
        self._grow(0)

    def _grow(self, in_flight: int) -> None:
        """With slow calls, want a worker per call in flight; start a starter while fewer are started."""
        with self._lock:
            if self._last_call_s >= self.SLOW_CALL_S:
                self._wanted = max(self._wanted, min(self.concurrency, in_flight))
            active = [starter for starter in self._starters if starter.is_alive()]
            if self._closed or len(active) >= self.STARTS_AT_ONCE or self._started >= self._wanted:
                return
            self._started += 1
            starter = threading.Thread(target=self._start_workers, name="evaluator-starter", daemon=True)
            self._starters = [*active, starter]
        starter.start()

    def _start_workers(self) -> None:
        """Start workers one after another while the pool wants more (each counted in `_started` beforehand)."""
        while True:
            worker = _Worker(self.code)
            try:
                worker.wait_ready()
            except JobFailed as error:
                self._lose_a_starting_worker(error)
                return
            with self._lock:
                if self._closed:
                    worker.kill()
                    return
                self._arrived.append(worker)
                more = self._started < self._wanted
                if more:
                    self._started += 1
            self._wake()
            if not more:
                return

    def _lose_a_starting_worker(self, error: JobFailed) -> None:
        with self._lock:
            self._started -= 1
            if self._started > 0:
                return
            # no worker is left to run what is queued, and none will be
            self._broken = error
            stranded, self._queued = list(self._queued), deque()
        for call in stranded:
            call.future.set_exception(error)

    def close(self) -> None:
        """Stop the workers; calls still queued or running are cancelled."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._wake()
        self._dispatcher.join()
        for starter in self._starters:
            starter.join()
        calls = [*self._queued, *(worker.call for worker in self._busy.values())]
        for call in calls:
            call.future.cancel()
        for worker in [*self._arrived, *self._idle, *self._busy.values()]:
            worker.kill()
        self._selector.close()
        os.close(self._wake_read)
        os.close(self._wake_write)

    def __enter__(self) -> EvaluatorPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
