"""Evaluator builds run on a fixed number of threads, in the order they were queued; a server that stopped with
builds queued or running marks them failed when it starts again."""

from __future__ import annotations

import threading
import time

from rftlab.server.api_common import ServerContext
from rftlab.server.api_evaluators import BUILDING_MESSAGE, QUEUED_MESSAGE, fail_interrupted_builds
from rftlab.server.build_queue import BuildQueue
from rftlab.server.layout import StateLayout
from rftlab.server.store import Resource, Store, find_resource


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


def test_builds_queued_or_running_when_the_server_stopped_fail_at_its_next_start(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    states = {"queued": ("BUILDING", QUEUED_MESSAGE), "running": ("BUILDING", BUILDING_MESSAGE)}
    states["built"] = ("ACTIVE", "")
    with store.session() as session:
        for evaluator_id, (state, message) in states.items():
            body = {"state": state, "status": {"code": "OK", "message": message}}
            session.add(
                Resource(account_id="a", kind="evaluators", resource_id=evaluator_id, state=state, body=body)
            )
    fail_interrupted_builds(ServerContext(store, StateLayout(tmp_path), lambda: None))
    with store.reading() as session:
        found = {key: find_resource(session, "a", "evaluators", key) for key in states}
        assert {key: resource.state for key, resource in found.items()} == {
            "queued": "BUILD_FAILED",
            "running": "BUILD_FAILED",
            "built": "ACTIVE",
        }
        assert "the server restarted during the build" in found["queued"].body["status"]["message"]
    store.dispose()
