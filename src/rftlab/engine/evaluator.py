"""The user's evaluator, run in a pool of separate, sandboxed worker processes.

Each worker process (evaluator_worker.py) serves one call at a time. One dispatcher thread hands queued calls
to idle workers and reads their answers as they arrive (a selector over the workers' pipes), so several calls
run at once while the caller keeps generating, and a fast evaluator costs a pipe round trip per call rather
than a thread hand-off and a timer thread per call (64 exact-match calls through 8 workers: about 18 ms with a
thread per call, 3-5 ms this way). A call that raises, outlives its timeout (its process is killed), crashes its
process, returns a non-finite, out-of-range or self-declared invalid score, or answers anything but the protocol
yields an invalid `Score`, never an exception. Each answer also says what the call cost inside the worker
(`CallTiming`), which is what the pool grows on.

Every worker runs in rftlab.sandbox: it reads the system, the Python install and its evaluator's code, writes only
its own scratch folder (its HOME), has no network, no secrets but the account's own, bounded memory, CPU, files
and processes, and everything it forks ends with it. A worker that has not imported the evaluator within
`start_timeout_s` fails the job; what the evaluator prints reaches the job's log only up to `output_limit` bytes
per call.
"""

from __future__ import annotations

import contextlib
import dataclasses
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
from rftlab.engine.evaluator_worker import TIMING, CallTiming
from rftlab.sandbox import SandboxPolicy, SandboxUnavailable, start

WORKER_SCRIPT = Path(__file__).with_name("evaluator_worker.py")
EVAL_PROTOCOL_ENTRY = Path(__file__).with_name("eval_protocol_entry.py")
DEFAULT_SANDBOX = SandboxPolicy()
START_TIMEOUT_S = 120.0
"""How long a worker may take to import the evaluator (the build check's own limit)."""
OUTPUT_LIMIT_BYTES = 64 << 10
MAX_ANSWER_BYTES = 1 << 20
EXIT_WAIT_S = 0.5
LOG_FD = 2
"""Where what evaluators print goes (the job worker's stderr is its worker.log)."""
_ANSWERS, _OUTPUT, _CALLS = "answers", "output", "calls"


def worker_policy(base: SandboxPolicy, code: EvaluatorCode) -> SandboxPolicy:
    """`base` plus read access to the evaluator's code, its environment and the worker script (with the module
    it loads for eval-protocol entries), and the account's secrets as environment variables."""
    readable = [code.root.resolve(), WORKER_SCRIPT.resolve(), EVAL_PROTOCOL_ENTRY.resolve()]
    if code.python != Path(sys.executable):
        readable.append(code.python.parent.parent)  # the venv; bin/python links to an allowed interpreter
    return dataclasses.replace(base, read_only=(*base.read_only, *readable), env={**base.env, **code.env})


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
    deadline: float = 0.0


class MalformedAnswer(ValueError):
    pass


def parse_answer(line: bytes) -> tuple[Score, CallTiming]:
    """One answer line from a worker -> its Score and what the call cost; MalformedAnswer for anything but the
    protocol's two shapes (the line comes from the user's process, which can write anything to the pipe)."""
    try:
        answer = json.loads(line)
    except ValueError:
        raise MalformedAnswer(f"not JSON: {line[:80]!r}") from None
    if not isinstance(answer, dict) or not isinstance(answer.get("ok"), bool):
        raise MalformedAnswer(f"no 'ok' flag: {line[:80]!r}")
    timing = CallTiming.from_wire(answer.get(TIMING))
    if timing is None:
        raise MalformedAnswer(f"no valid {TIMING!r}: {line[:80]!r}")
    if not answer["ok"]:
        if not isinstance(answer.get("error"), str):
            raise MalformedAnswer("a failed call without an error message")
        return Score(None, error=answer["error"]), timing
    result = answer.get("result")
    if not (
        isinstance(result, dict)
        and _is_number(result.get("score"))
        and isinstance(result.get("reason"), str)
        and isinstance(result.get("is_score_valid"), bool)
        and isinstance(result.get("metrics"), dict)
        and all(_is_number(value) for value in result["metrics"].values())
    ):
        raise MalformedAnswer(f"a result without the expected fields: {line[:80]!r}")
    return checked_score(result), timing


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class _Worker:
    """One sandboxed worker process and the dispatcher's ends of its pipes: calls in (non-blocking, so a worker
    that stops reading cannot stall the dispatcher), answers out, and its own prints (stderr), passed on to the
    job's log up to `output_limit` bytes per call and counted beyond."""

    def __init__(self, code: EvaluatorCode, policy: SandboxPolicy | None, output_limit: int):
        command = [
            str(code.python),
            "-I",
            "-B",
            str(WORKER_SCRIPT),
            str(code.root),
            code.entry_file,
            code.entry_func,
        ]
        try:
            self.sandboxed = start(
                command,
                policy,
                cwd=code.root,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except SandboxUnavailable as error:
            raise JobFailed(str(error)) from None
        except OSError as error:
            raise JobFailed(f"cannot start an evaluator worker: {error}") from None
        self.process = self.sandboxed.popen
        self.entry_file = code.entry_file
        self.fd = self.process.stdout.fileno()
        self.err_fd = self.process.stderr.fileno()
        self.in_fd = self.process.stdin.fileno()
        os.set_blocking(self.in_fd, False)
        self.call: _Call | None = None
        self._unread = b""
        self._unsent = b""
        self.output_limit = output_limit
        self._output_left = output_limit
        self._output_dropped = 0
        self._last_output = b""

    def wait_ready(self, deadline: float, timeout_s: float) -> None:
        """Until the worker has imported the evaluator; JobFailed (the worker killed) if it cannot, or does not
        by `deadline` (time.monotonic(), `timeout_s` after the start)."""
        with selectors.DefaultSelector() as selector:
            selector.register(self.fd, selectors.EVENT_READ)
            selector.register(self.err_fd, selectors.EVENT_READ)
            lines: list[bytes] | None = []
            while lines == []:
                left = deadline - time.monotonic()
                events = selector.select(left) if left > 0 else []
                if not events:
                    self.kill()
                    raise JobFailed(
                        f"the evaluator {self.entry_file} did not finish importing within {timeout_s:g} s"
                        " (does it hang at import?)"
                    )
                for key, _ in events:
                    if key.fd == self.err_fd:
                        if not self.pass_on_output():
                            selector.unregister(self.err_fd)
                    elif lines == []:
                        try:
                            lines = self.read_lines()
                        except MalformedAnswer:
                            lines = [b""]
        try:
            answer = json.loads(lines[0]) if lines else None
        except ValueError:
            answer = None
        if isinstance(answer, dict) and answer.get("ready") is True:
            return
        exit_code = self.exit_code() if lines is None else None
        self.kill()
        if lines is None:
            said = self._last_output.decode(errors="replace").strip().splitlines()
            why = f"the worker exited at start (exit code {exit_code})"
            why += f": {said[-1]}" if said else ""
        elif isinstance(answer, dict) and isinstance(answer.get("error"), str):
            why = answer["error"]
        else:
            why = "the worker broke the start protocol"
        raise JobFailed(f"the evaluator cannot be loaded: {why}")

    def read_lines(self) -> list[bytes] | None:
        """The complete lines that have arrived (one read; it blocks only if nothing has); None at end of file.
        An unfinished line longer than MAX_ANSWER_BYTES raises MalformedAnswer."""
        data = os.read(self.fd, 1 << 16)
        if not data:
            return None
        *lines, self._unread = (self._unread + data).split(b"\n")
        if len(self._unread) > MAX_ANSWER_BYTES:
            raise MalformedAnswer(f"an answer line longer than {MAX_ANSWER_BYTES} bytes")
        return lines

    def pass_on_output(self) -> bool:
        """Copy what the evaluator printed to our stderr, within this call's allowance; False at end of file."""
        data = os.read(self.err_fd, 1 << 16)
        if not data:
            return False
        self._last_output = (self._last_output + data)[-4096:]
        kept = data[: self._output_left]
        self._output_left -= len(kept)
        self._output_dropped += len(data) - len(kept)
        _write_all(LOG_FD, kept)
        return True

    def end_of_call_output(self) -> None:
        if self._output_dropped:
            _write_all(
                LOG_FD,
                f"\n[evaluator output over {self.output_limit} bytes in one call: "
                f"{self._output_dropped} more bytes dropped]\n".encode(),
            )
        self._output_left, self._output_dropped = self.output_limit, 0

    def send(self, call: _Call, timeout_s: float) -> bool:
        """Start `call` on this idle worker; False if the worker had died (the call was not delivered)."""
        self._unsent = call.payload
        if not self.write_some():
            return False
        call.deadline = time.monotonic() + timeout_s
        self.call = call
        return True

    @property
    def sending(self) -> bool:
        return bool(self._unsent)

    def write_some(self) -> bool:
        """Write what the pipe takes of the call being sent; False if the worker is gone."""
        try:
            written = os.write(self.in_fd, self._unsent)
        except BlockingIOError:
            return True
        except OSError:
            self._unsent = b""
            return False
        self._unsent = self._unsent[written:]
        return True

    def exit_code(self) -> int | None:
        """The exit code of a worker whose pipe has closed (the launcher passes it on a moment later)."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            return self.process.wait(EXIT_WAIT_S)
        return None

    def kill(self) -> None:
        """End the worker and everything it started; its scratch folder goes too."""
        self.sandboxed.kill()


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


class EvaluatorPool:
    """`submit(messages, ground_truth, fields)` -> Future[Score]; up to `concurrency` calls run at once.

    `INITIAL_WORKERS` worker processes start with the pool (an evaluator that cannot load fails the job at
    once). More workers pay only for an evaluator that waits (on a remote judge, a sandbox, I/O): when calls
    queue for a busy worker while the recent calls spent `SLOW_WAIT_S` or more each, on average, off a core by
    their own doing (`CallTiming.waited_s`: neither computing nor waiting for a core that another process
    holds), more workers start in the background, `STARTS_AT_ONCE` at a time, so the waits overlap instead of
    queueing: up to one worker per call in flight, at most `concurrency`, and at most as many as the calls'
    own computing needs to fill the cores, cores x (CPU + wait) / CPU. An evaluator that computes, or answers
    in a millisecond, keeps the initial processes however busy the machine is. A worker that dies or is killed
    for a timeout is replaced the same way.
    """

    INITIAL_WORKERS = 8
    SLOW_WAIT_S = 0.02
    RECENT_WEIGHT = 1 / 16
    """Of each call in the running means of the calls' CPU and wait times (its weight halves every 11 calls)."""
    STARTS_AT_ONCE = 2

    def __init__(
        self,
        code: EvaluatorCode,
        concurrency: int,
        timeout_s: float,
        *,
        sandbox: SandboxPolicy | None = DEFAULT_SANDBOX,
        start_timeout_s: float = START_TIMEOUT_S,
        output_limit: int = OUTPUT_LIMIT_BYTES,
    ):
        self.code, self.timeout_s, self.concurrency = code, timeout_s, concurrency
        self.start_timeout_s, self.output_limit = start_timeout_s, output_limit
        self.policy = None if sandbox is None else worker_policy(sandbox, code)
        workers: list[_Worker] = []
        try:
            for _ in range(min(concurrency, self.INITIAL_WORKERS)):
                workers.append(self._new_worker())
            deadline = time.monotonic() + start_timeout_s
            for worker in workers:
                worker.wait_ready(deadline, start_timeout_s)
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
        self._cores = len(os.sched_getaffinity(0))
        self._calls_done = 0
        self._mean_cpu_s = self._mean_waited_s = 0.0
        """What the recent calls cost (the dispatcher's own)."""
        self._starters: list[threading.Thread] = []
        self._starting: set[_Worker] = set()
        """Workers a starter thread is waiting on (guarded by the lock)."""
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

    def _new_worker(self) -> _Worker:
        return _Worker(self.code, self.policy, self.output_limit)

    def _dispatch(self) -> None:
        try:
            while not self._closed:
                self._take_in_arrivals()
                self._start_queued_calls()
                for key, _ in self._selector.select(self._seconds_to_next_deadline()):
                    if key.data is None:
                        os.read(self._wake_read, 1 << 16)
                        continue
                    worker, pipe = key.data
                    if worker.fd not in self._busy and worker not in self._idle:
                        continue  # retired earlier in this round
                    if pipe == _ANSWERS:
                        self._read(worker)
                    elif pipe == _OUTPUT:
                        if not worker.pass_on_output():
                            self._selector.unregister(worker.err_fd)
                    elif not worker.write_some() or not worker.sending:
                        self._selector.unregister(worker.in_fd)
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
            self._selector.register(worker.fd, selectors.EVENT_READ, (worker, _ANSWERS))
            self._selector.register(worker.err_fd, selectors.EVENT_READ, (worker, _OUTPUT))
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
                if worker.sending:
                    self._selector.register(worker.in_fd, selectors.EVENT_WRITE, (worker, _CALLS))
            else:
                with self._lock:
                    self._queued.appendleft(call)
                self._retire(worker)
        with self._lock:
            waiting = len(self._queued)
        if waiting:
            self._grow(waiting + len(self._busy))

    def _read(self, worker: _Worker) -> None:
        try:
            lines = worker.read_lines()
        except MalformedAnswer as error:
            self._fail_and_retire(worker, f"the evaluator process broke the answer protocol: {error}")
            return
        if lines is None:
            self._fail_and_retire(worker, f"the evaluator process died (exit code {worker.exit_code()})")
            return
        for line in lines:
            if worker.sending:
                self._fail_and_retire(worker, "the evaluator process answered a call it had not read")
                return
            call, worker.call = worker.call, None
            if call is None:
                continue  # a line the worker's code wrote between calls
            try:
                score, timing = parse_answer(line)
            except MalformedAnswer as error:
                worker.call = call
                self._fail_and_retire(worker, f"the evaluator process broke the answer protocol: {error}")
                return
            self._count_in(timing)
            del self._busy[worker.fd]
            self._idle.append(worker)
            worker.end_of_call_output()
            call.future.set_result(score)

    def _fail_and_retire(self, worker: _Worker, error: str) -> None:
        """The worker's call (if any) fails with `error`; the worker is killed and replaced."""
        call = worker.call
        self._retire(worker)
        if call is not None:
            call.future.set_result(Score(None, error=error))

    def _seconds_to_next_deadline(self) -> float | None:
        deadlines = [worker.call.deadline for worker in self._busy.values()]
        return max(0.0, min(deadlines) - time.monotonic()) if deadlines else None

    def _expire_overdue_calls(self) -> None:
        now = time.monotonic()
        for worker in [w for w in self._busy.values() if w.call.deadline <= now]:
            self._fail_and_retire(worker, f"the evaluator call timed out after {self.timeout_s:g} s")

    def _retire(self, worker: _Worker) -> None:
        """Forget a dead, overdue or misbehaving worker (killing it) and start a replacement."""
        for fd in (worker.fd, worker.err_fd, worker.in_fd):  # before the kill closes the fds, whose numbers
            with contextlib.suppress(KeyError):  # may then be reused
                self._selector.unregister(fd)
        self._busy.pop(worker.fd, None)
        with contextlib.suppress(ValueError):
            self._idle.remove(worker)
        worker.kill()
        worker.end_of_call_output()
        with self._lock:
            self._started -= 1
        self._grow(0)

    @property
    def size(self) -> int:
        """Worker processes running or being started."""
        with self._lock:
            return self._started

    def _count_in(self, timing: CallTiming) -> None:
        weight = max(self.RECENT_WEIGHT, 1 / (self._calls_done + 1))  # the first calls: their plain mean
        self._mean_cpu_s += weight * (timing.cpu_s - self._mean_cpu_s)
        self._mean_waited_s += weight * (timing.waited_s - self._mean_waited_s)
        self._calls_done += 1

    def _workers_worth_having(self) -> int:
        """How many workers the recent calls make worth having (0: no more than now); see the class doc."""
        if self._mean_waited_s < self.SLOW_WAIT_S:
            return 0
        if self._mean_cpu_s <= 0.0:
            return self.concurrency
        return math.ceil(self._cores * (self._mean_cpu_s + self._mean_waited_s) / self._mean_cpu_s)

    def _grow(self, in_flight: int) -> None:
        """Want as many workers as are worth having for the calls in flight; start a starter while fewer are
        started."""
        worth = self._workers_worth_having()
        with self._lock:
            self._wanted = max(self._wanted, min(self.concurrency, in_flight, worth))
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
            try:
                worker = self._new_worker()
            except JobFailed as error:
                self._lose_a_starting_worker(error)
                return
            with self._lock:
                if self._closed:
                    worker.kill()
                    return
                self._starting.add(worker)
            try:
                worker.wait_ready(time.monotonic() + self.start_timeout_s, self.start_timeout_s)
            except JobFailed as error:
                self._lose_a_starting_worker(error)
                return
            finally:
                with self._lock:
                    self._starting.discard(worker)
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
            starting = list(self._starting)
        for worker in starting:  # its starter thread sees the end of its pipes at once instead of waiting
            worker.sandboxed.stop()
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
