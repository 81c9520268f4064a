"""Finding and stopping job worker processes by pid, safely: a pid is only signalled when /proc shows it is the
worker of that job (pids are reused), and a zombie counts as dead."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

WORKER_MODULE = "rftlab.server.worker"


def worker_command_matches(pid: int, job_seq: int) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return WORKER_MODULE.encode() in argv and str(job_seq).encode() in argv


def is_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def kill_worker(pid: int, job_seq: int) -> None:
    if worker_command_matches(pid, job_seq):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
