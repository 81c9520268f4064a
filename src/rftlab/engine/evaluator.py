"""The user's evaluator, run in a pool of separate worker processes.

Each worker process (evaluator_worker.py) serves one call at a time; a thread per worker slot waits on it, so
several calls run at once and the caller keeps generating while they do. A call that raises, outlives its
timeout (its process is killed), crashes its process, or returns a non-finite, out-of-range or self-declared
invalid score yields an invalid `Score`, never an exception. Workers get an environment without the server's
secrets.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import queue
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
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


class _Worker:
    def __init__(self, code: EvaluatorCode):
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER_SCRIPT), str(code.root), code.entry_file, code.entry_func],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=worker_environment(),
            text=True,
            bufsize=1,
        )

    def wait_ready(self) -> None:
        line = self.process.stdout.readline()
        answer = json.loads(line) if line else {"ready": False, "error": "the worker process exited at start"}
        if not answer["ready"]:
            self.kill()
            raise JobFailed(f"the evaluator cannot be loaded: {answer['error']}")

    def call(self, payload: str, timeout_s: float) -> Score:
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            self.process.kill()

        timer = threading.Timer(timeout_s, expire)
        timer.start()
        try:
            self.process.stdin.write(payload)
            self.process.stdin.flush()
            line = self.process.stdout.readline()
        except (BrokenPipeError, OSError):
            line = ""
        finally:
            timer.cancel()
        if not line:
            self.kill()
            if expired.is_set():
                return Score(None, error=f"the evaluator call timed out after {timeout_s:g} s")
            return Score(None, error=f"the evaluator process died (exit code {self.process.returncode})")
        answer = json.loads(line)
        if not answer["ok"]:
            return Score(None, error=answer["error"])
        return checked_score(answer["result"])

    def alive(self) -> bool:
        return self.process.poll() is None

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
    once). When calls queue for a busy worker while calls take `SLOW_CALL_S` or more (an evaluator that waits on
    a remote judge or a sandbox), more workers start in the background, `STARTS_AT_ONCE` at a time, until there
    is one per call in flight (at most `concurrency`), so the waits overlap instead of queueing. An evaluator
    that answers in a millisecond keeps the initial processes.
    """

    INITIAL_WORKERS = 8
    SLOW_CALL_S = 0.02
    STARTS_AT_ONCE = 2

    def __init__(self, code: EvaluatorCode, concurrency: int, timeout_s: float):
        self.code, self.timeout_s, self.concurrency = code, timeout_s, concurrency
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        self._threads = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="evaluator")
        workers = [_Worker(code) for _ in range(min(concurrency, self.INITIAL_WORKERS))]
        try:
            for worker in workers:
                worker.wait_ready()
        except JobFailed:
            for worker in workers:
                worker.kill()
            raise
        for worker in workers:
            self._idle.put(worker)
        self._lock = threading.Lock()
        self._started = self._wanted = len(workers)
        self._in_flight = 0
        self._last_call_s = 0.0
        self._starters: list[threading.Thread] = []
        self._closed = False

    def submit(
        self, messages: list[dict[str, Any]], ground_truth: Any, fields: dict[str, Any]
    ) -> Future[Score]:
        payload = json.dumps({"messages": messages, "ground_truth": ground_truth, "fields": fields}) + "\n"
        with self._lock:
            self._in_flight += 1
        return self._threads.submit(self._run, payload)

    def _run(self, payload: str) -> Score:
        worker = self._take_worker()
        started = time.perf_counter()
        try:
            if not worker.alive():
                worker = _Worker(self.code)
                worker.wait_ready()
            return worker.call(payload, self.timeout_s)
        finally:
            self._last_call_s = time.perf_counter() - started
            with self._lock:
                self._in_flight -= 1
            self._idle.put(worker)

    def _take_worker(self) -> _Worker:
        while True:
            try:
                return self._idle.get(timeout=self.SLOW_CALL_S)
            except queue.Empty:
                self._grow()

    def _grow(self) -> None:
        """A call is queueing: with slow calls, want a worker per call in flight and start one more starter."""
        if self._last_call_s < self.SLOW_CALL_S:
            return
        with self._lock:
            self._wanted = max(self._wanted, min(self.concurrency, self._in_flight))
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
            except JobFailed:
                with self._lock:  # it loaded at the start: leave the pool as it is
                    self._started -= 1
                return
            with self._lock:
                if self._closed:
                    worker.kill()
                    return
                self._idle.put(worker)
                if self._started >= self._wanted:
                    return
                self._started += 1

    def close(self) -> None:
        if self._closed:
            return
        with self._lock:
            self._closed = True
        for starter in self._starters:
            starter.join()
        self._threads.shutdown(wait=True, cancel_futures=True)
        while not self._idle.empty():
            self._idle.get().kill()

    def __enter__(self) -> EvaluatorPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
