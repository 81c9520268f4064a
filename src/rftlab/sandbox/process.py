"""Starting a command inside the sandbox, and ending it with everything it started."""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rftlab.sandbox.host import ENTER_SCRIPT, require_sandbox
from rftlab.sandbox.policy import SandboxPolicy


class SandboxedProcess:
    """A process started by `start`: its own process group (and PID namespace where the host has one) and its
    own scratch folder, both gone after `kill()`."""

    def __init__(self, popen: subprocess.Popen, scratch: Path | None):
        self.popen = popen
        self.scratch = scratch

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self) -> None:
        """SIGKILL the whole process group (and so the PID namespace); safe from any thread."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)

    def kill(self) -> None:
        """`stop`, then reap the launcher, close our pipe ends and delete the scratch."""
        self.stop()
        self.popen.wait()
        for stream in (self.popen.stdin, self.popen.stdout, self.popen.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)


def start(
    command: list[str],
    policy: SandboxPolicy | None,
    *,
    cwd: Path,
    stdin: Any = subprocess.DEVNULL,
    stdout: Any = None,
    stderr: Any = None,
    allow_unsandboxed: bool | None = None,
) -> SandboxedProcess:
    """Run `command` confined by `policy` (None: unconfined, for trusted code and comparisons only).

    Raises SandboxUnavailable when the host lacks filesystem or network confinement and the operator did not
    opt in (see `require_sandbox`)."""
    if policy is None:
        popen = subprocess.Popen(
            command, cwd=cwd, stdin=stdin, stdout=stdout, stderr=stderr, start_new_session=True
        )
        return SandboxedProcess(popen, None)
    host = require_sandbox(allow_unsandboxed)
    scratch = Path(tempfile.mkdtemp(prefix="rftlab-sandbox-", dir=policy.scratch_parent)).resolve()
    (scratch / "tmp").mkdir()
    spec = {
        "read_only": policy.readable_paths(),
        "read_write": policy.writable_paths(scratch),
        "network": policy.network,
        "limits": policy.limits.as_dict(),
        "landlock_abi": host.landlock_abi,
        "user_namespace": host.user_namespace,
        "net_namespace": host.net_namespace,
        "pid_namespace": host.pid_namespace,
        "mount_namespace": host.mount_namespace,
        "scratch": str(scratch),
        "scratch_bytes": policy.scratch_bytes,
        "parent_pid": os.getpid(),
    }
    launcher = [sys.executable, "-I", "-S", str(ENTER_SCRIPT), json.dumps(spec), "--", *command]
    try:
        popen = subprocess.Popen(
            launcher,
            cwd=cwd,
            env=policy.environment(scratch),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return SandboxedProcess(popen, scratch)


@dataclass(frozen=True)
class Finished:
    returncode: int | None
    """None when the command was killed before it ended: see `stopped`."""
    output: str
    """Its stdout and stderr together, only the last `output_limit` bytes when there were more."""
    dropped_bytes: int
    stopped: str | None = None
    """Why it was killed: its timeout, or what `watch` said."""


def run(
    command: list[str],
    policy: SandboxPolicy | None,
    *,
    cwd: Path,
    timeout_s: float,
    output_limit: int = 64 << 10,
    allow_unsandboxed: bool | None = None,
    watch: Callable[[], str | None] | None = None,
    watch_interval_s: float = 1.0,
) -> Finished:
    """Run to the end (or kill at `timeout_s`), keeping only the tail of what it prints. `watch`, called about
    every `watch_interval_s` while the command runs, kills it by returning the reason (for example a folder that
    grew past its bound)."""
    process = start(
        command,
        policy,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        allow_unsandboxed=allow_unsandboxed,
    )
    try:
        tail, dropped, stopped = _follow(
            process.popen, time.monotonic() + timeout_s, output_limit, watch, watch_interval_s
        )
        if stopped is None and process.popen.poll() is None:
            stopped = f"took longer than {timeout_s:g} s"
    finally:
        process.kill()
    returncode = None if stopped else process.popen.returncode
    return Finished(returncode, tail.decode(errors="replace"), dropped, stopped)


def _follow(
    popen: subprocess.Popen,
    deadline: float,
    limit: int,
    watch: Callable[[], str | None] | None,
    interval_s: float,
) -> tuple[bytes, int, str | None]:
    """Read its output until it exits or the deadline passes, keeping the last `limit` bytes and counting the rest,
    and ask `watch` every `interval_s`; the reason `watch` gave, if it gave one."""
    tail, dropped, open_stream = b"", 0, popen.stdout
    next_watch = time.monotonic() + interval_s
    with selectors.DefaultSelector() as selector:
        selector.register(open_stream, selectors.EVENT_READ)
        while (left := deadline - time.monotonic()) > 0:
            wait = min(left, max(0.0, next_watch - time.monotonic())) if watch else left
            if open_stream is not None:
                if selector.select(wait):
                    data = os.read(open_stream.fileno(), 1 << 16)
                    if data:
                        tail += data
                        if len(tail) > limit:
                            dropped += len(tail) - limit
                            tail = tail[-limit:]
                    else:  # it closed its output; it may still be running
                        selector.unregister(open_stream)
                        open_stream = None
            elif _exited_within(popen, wait):
                break
            if open_stream is None and popen.poll() is not None:
                break
            if watch and time.monotonic() >= next_watch:
                if (reason := watch()) is not None:
                    return tail, dropped, reason
                next_watch = time.monotonic() + interval_s
    return tail, dropped, None


def _exited_within(popen: subprocess.Popen, seconds: float) -> bool:
    try:
        popen.wait(seconds)
        return True
    except subprocess.TimeoutExpired:
        return False
