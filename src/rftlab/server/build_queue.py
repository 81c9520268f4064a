"""A fixed number of threads that run evaluator builds in the order they were queued: a hundred uploads at once
wait their turn instead of starting a hundred threads, installs and import checks."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class BuildQueue:
    def __init__(self, workers: int, name: str = "evaluator-build"):
        self.workers = workers
        self.name = name
        self._tasks: queue.SimpleQueue[tuple[Callable[[], None], threading.Event]] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._threads_lock = threading.Lock()

    def submit(self, task: Callable[[], None]) -> threading.Event:
        """Run `task` once a thread is free; the event is set when it has run (or raised)."""
        done = threading.Event()
        self._tasks.put((task, done))
        with self._threads_lock:
            if len(self._threads) < self.workers:
                # Daemon threads: stopping the server does not wait for an install (a restart marks it failed).
                thread = threading.Thread(
                    target=self._work, name=f"{self.name}-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
        return done

    def _work(self) -> None:
        while True:
            task, done = self._tasks.get()
            try:
                task()
            except Exception:  # a task reports its own failures; this keeps the thread serving the queue
                log.exception("an evaluator build failed outside its own error handling")
            finally:
                done.set()
