"""A child process's output into a log file of bounded size: the child writes to a pipe, a thread here appends
what it reads to the file and, when the file reaches its bound, moves it to `<name>.1` (replacing the one before)
and starts a new one. Whatever the child prints, the log never holds more than twice the bound."""

from __future__ import annotations

import os
import threading
from pathlib import Path

READ_BYTES = 64 << 10


def capped_log_pipe(path: Path, max_bytes: int) -> int:
    """The write end of a pipe that feeds `path`; pass it to the child and close it here once the child runs."""
    read_end, write_end = os.pipe()
    threading.Thread(
        target=_copy, args=(read_end, path, max_bytes), name=f"log-{path.parent.name}", daemon=True
    ).start()
    return write_end


class _RotatingFile:
    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path, self.max_bytes = path, max_bytes
        self.out = path.open("ab")
        self.size = self.out.tell()

    def write(self, chunk: bytes) -> None:
        while chunk:
            if self.size >= self.max_bytes:
                self.out.close()
                os.replace(self.path, self.path.with_name(self.path.name + ".1"))
                self.out, self.size = self.path.open("ab"), 0
            room = self.max_bytes - self.size
            self.out.write(chunk[:room])
            self.size += len(chunk[:room])
            chunk = chunk[room:]
        self.out.flush()


def _copy(read_end: int, path: Path, max_bytes: int) -> None:
    try:
        log: _RotatingFile | None = _RotatingFile(path, max_bytes)
    except OSError:
        log = None
    try:
        while chunk := os.read(read_end, READ_BYTES):
            if log is None:
                continue  # the log cannot be written (its job was deleted): read on, so the child never blocks
            try:
                log.write(chunk)
            except OSError:
                log = None
    finally:
        if log is not None:
            log.out.close()
        os.close(read_end)
