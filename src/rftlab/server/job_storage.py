"""What a job's worker moves between the storage and its node's local copy when `rftlab serve --storage-url` is set
(every step is a no-op without it): the inputs fetched before the job runs, each checkpoint stored once the engine
completed it (before the steps it holds are reported, so a job requeued onto another node resumes with no
reported step lost), the output adapter stored at the end, and the worker log copied as it grows.

Each fetch and store is tried again when the storage fails (RETRY_DELAYS_S); when it keeps failing, the worker
ends with StorageUnavailable and the scheduler queues the job again, to resume from its last stored checkpoint."""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from rftlab.engine.api import Reporter
from rftlab.server.evaluator_build import BuildError
from rftlab.server.evaluator_env import (
    InstallSettings,
    ensure_environment,
    evaluator_python,
    read_requirements,
)
from rftlab.server.storage import Storage, StorageError, StorageUnavailable, node_cache_root

CHECKPOINT_PREFIX = "step-"
LOG_COPY_INTERVAL_S = 5.0
LOG_SETTLE_S = 1.0
RETRY_DELAYS_S = (2.0, 6.0)
"""The waits between the tries of one fetch or store (three tries over about ten seconds): an object store's blip
passes within them; a longer outage ends the worker, and its job waits in the queue for another start."""

T = TypeVar("T")


def note(line: str) -> None:
    """A line of the job's worker log."""
    print(line, file=sys.stderr, flush=True)


def retried(storage: Storage, doing: str, path: Path, action: Callable[[], T]) -> T:
    """`action()`, `doing` (fetching, storing) the key of `path`, tried again after each of RETRY_DELAYS_S while
    the storage fails; StorageUnavailable naming the key's URL, the error and the fix once every try failed. What
    is absent, or was changed outside rftlab (StorageError), is not tried again."""
    delays = iter(RETRY_DELAYS_S)
    while True:
        try:
            return action()
        except StorageError:
            raise
        except Exception as error:  # whatever the backend raises: a reset connection, throttling, EACCES...
            failure = f"{type(error).__name__}: {error}"
            delay = next(delays, None)
            if delay is None:
                raise StorageUnavailable(
                    f"{doing} {storage.location(path)} failed {len(RETRY_DELAYS_S) + 1} times, last with "
                    f"{failure}; if this lasts, check that the storage (rftlab serve --storage-url) still exists "
                    "and that the workers' credentials may read and write it (the AWS_*, GOOGLE_*, AZURE_* "
                    "variables of the server's environment, else of each node's)"
                ) from None
            note(f"{doing} {storage.location(path)} failed ({failure}); trying again in {delay:g} s")
            time.sleep(delay)


def fetch_checkpoint(storage: Storage, checkpoint_dir: Path) -> str | None:
    """The job's last stored checkpoint as its only local one (a copy left on this node by an earlier run may be
    stale); its folder name, or None when storage holds none."""
    if not storage.remote:
        return None

    def fetch_last() -> str | None:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
        stored = [name for name in storage.folders(checkpoint_dir) if name.startswith(CHECKPOINT_PREFIX)]
        if stored:
            storage.fetch_dir(checkpoint_dir / stored[-1])
        return stored[-1] if stored else None

    last = retried(storage, "fetching the last checkpoint from", checkpoint_dir, fetch_last)
    if last:
        note(f"resuming from checkpoint {last}, fetched from {storage.location(checkpoint_dir)}")
    return last


def node_evaluator_python(storage: Storage, code_root: Path, settings: InstallSettings) -> Path:
    """The evaluator's interpreter; with a storage URL, its environment is built on this node from the stored
    requirements.txt when the node lacks it, within `settings` (the server's). BuildError says why it cannot be
    had."""
    try:
        return evaluator_python(storage.root, code_root)
    except BuildError:
        if not storage.remote:
            raise
    note("the evaluator's environment is not on this node: building it from its stored requirements.txt")
    return ensure_environment(storage.root, read_requirements(code_root), note, settings)


class StoringReporter:
    """The worker's Reporter, storing each checkpoint the engine completes before passing on what it reports."""

    def __init__(
        self, reporter: Reporter, storage: Storage, checkpoint_dir: Path, stored: str | None
    ) -> None:
        self.reporter, self.storage, self.checkpoint_dir = reporter, storage, checkpoint_dir
        self.stored = stored
        """The folder name of the checkpoint storage holds."""

    def store_new_checkpoint(self) -> None:
        if not self.storage.remote:
            return
        from rftlab.engine.checkpoint import MARKER  # the engine (torch) is loaded once a checkpoint exists

        complete = sorted(
            path for path in self.checkpoint_dir.glob(f"{CHECKPOINT_PREFIX}*") if (path / MARKER).exists()
        )
        if not complete or complete[-1].name == self.stored:
            return
        newest = complete[-1]
        retried(self.storage, "storing", newest, lambda: self.storage.put_dir(newest))
        self.stored = newest.name
        try:
            for name in self.storage.folders(self.checkpoint_dir, complete=False):  # and any half-stored one
                if name != newest.name:
                    self.storage.delete(self.checkpoint_dir / name)
        except Exception as error:  # a resume takes the newest stored one; the next store removes these
            note(
                f"removing older checkpoints from {self.storage.location(self.checkpoint_dir)} failed: {error}"
            )
        for marker in self.checkpoint_dir.glob(f".{CHECKPOINT_PREFIX}*"):
            if not marker.name.startswith(f".{newest.name}"):
                marker.unlink(missing_ok=True)

    def step(self, metrics: dict[str, float]) -> None:
        self.store_new_checkpoint()
        self.reporter.step(metrics)

    def progress(self, percent: float, epoch: int, step: int, total_steps: int, output_tokens: int) -> None:
        self.store_new_checkpoint()
        self.reporter.progress(percent, epoch, step, total_steps, output_tokens)

    def rollouts(self, kind: str, step: int, rollouts: list[dict[str, Any]]) -> None:
        self.store_new_checkpoint()
        self.reporter.rollouts(kind, step, rollouts)

    def should_stop(self) -> bool:
        return self.reporter.should_stop()

    def note(self, message: str) -> None:
        self.reporter.note(message)


class LogCopy:
    """A job's worker log on a Ray node, written after what its earlier starts (on any node) wrote, and copied to
    the storage every LOG_COPY_INTERVAL_S while it grows and when the worker ends."""

    def __init__(self, storage_url: str, log_key: str, node_id: str) -> None:
        self.storage = Storage(storage_url).on(node_cache_root(storage_url, node_id))
        self.path = self.storage.root / log_key
        self.storage.fetch_file(self.path, missing_ok=True)
        self._copied_at, self._copied_size = 0.0, -1

    def copy(self, final: bool = False) -> None:
        if not final and time.monotonic() - self._copied_at < LOG_COPY_INTERVAL_S:
            return
        if final:  # the worker's last lines still pass through the log's pipe thread after it exits
            self._until_still(LOG_SETTLE_S)
        size = self._size()
        if size < 0 or size == self._copied_size:
            return
        try:
            self.storage.put_file(self.path)
        except Exception as error:  # the log is a copy: a storage hiccup must not end the job
            print(f"copying {self.path.name} to {self.storage.url} failed: {error}", file=sys.stderr)
            return
        self._copied_at, self._copied_size = time.monotonic(), size

    def _size(self) -> int:
        return self.path.stat().st_size if self.path.is_file() else -1

    def _until_still(self, most_s: float) -> None:
        deadline, last = time.monotonic() + most_s, -2
        while (size := self._size()) != last and time.monotonic() < deadline:
            last = size
            time.sleep(0.1)
