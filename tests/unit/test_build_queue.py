"""Evaluator builds run on a fixed number of threads, in the order they were queued."""

from __future__ import annotations

import threading
import time

from rftlab.server.build_queue import BuildQueue


def test_many_builds_at_once_never_run_more_than_the_bound_and_start_in_order():
    builds = BuildQueue(2, name="test-build")
    lock = threading.Lock()
    running, most_at_once, started = 0, 0, []

    def build(number: int) -> None:
        nonlocal running, most_at_once
        with lock:
            running += 1
            most_at_once = max(most_at_once, running)
            started.append(number)
        time.sleep(0.2)
        with lock:
            running -= 1

    done = [builds.submit(lambda number=number: build(number)) for number in range(8)]
    threads = [thread for thread in threading.enumerate() if thread.name.startswith("test-build")]
    assert all(event.wait(10) for event in done)
    assert most_at_once == 2
    assert started == list(range(8))
    assert len(threads) == 2


def test_a_build_that_raises_does_not_stop_the_queue():
    builds = BuildQueue(1, name="test-raising")
    ran = []

    def broken() -> None:
        raise RuntimeError("a bug in a build")

    assert builds.submit(broken).wait(5)
    assert builds.submit(lambda: ran.append(1)).wait(5)
    assert ran == [1]
