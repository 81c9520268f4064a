"""Which protections this host offers, found once by asking the launcher, and whether untrusted code may run."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ENTER_SCRIPT = Path(__file__).with_name("enter.py")
ALLOW_UNSANDBOXED_ENV = "RFTLAB_ALLOW_UNSANDBOXED"


class SandboxUnavailable(RuntimeError):
    """This host lacks a protection that untrusted code needs, and the operator did not opt out."""


@dataclass(frozen=True)
class Capabilities:
    landlock_abi: int
    """0: no Landlock; 4+ also confines TCP; 6+ also keeps signals and abstract sockets inside the sandbox."""
    user_namespace: bool
    net_namespace: bool
    pid_namespace: bool
    mount_namespace: bool
    root: bool

    @property
    def network_isolation(self) -> str | None:
        if self.net_namespace:
            return "network namespace"
        if self.landlock_abi >= 4:
            return "Landlock TCP rules (UDP and unix sockets stay open)"
        return None

    @property
    def process_tree(self) -> str:
        if self.pid_namespace:
            return "PID namespace (everything a process forks dies with it)"
        return "process group (a child that calls setsid() can outlive its process)"

    def missing(self) -> list[str]:
        """The protections untrusted code must not run without, absent here."""
        missing = []
        if not self.landlock_abi:
            missing.append("filesystem confinement (Landlock is off in this kernel)")
        if self.network_isolation is None:
            missing.append("network isolation (no network namespace, no Landlock ABI 4)")
        if not self.pid_namespace and self.landlock_abi < 6:
            missing.append(
                "process isolation (no PID namespace, no Landlock ABI 6: the server could be signalled)"
            )
        return missing

    def describe(self) -> str:
        """One line for the server's start-up log."""
        parts = [
            f"Landlock ABI {self.landlock_abi}" if self.landlock_abi else "no Landlock",
            f"network: {self.network_isolation or 'open'}",
            f"process tree: {self.process_tree}",
            "scratch: a size-bounded tmpfs"
            if self.mount_namespace
            else "scratch on disk, its total size unbounded",
            "user namespace" if self.user_namespace else "no user namespace",
        ]
        if self.root:
            parts.append("running as root: the process-count limit does not apply")
        missing = self.missing()
        state = "UNSAFE, missing " + "; ".join(missing) if missing else "complete"
        return f"evaluator sandbox {state} ({', '.join(parts)})"


NOTHING = Capabilities(
    landlock_abi=0,
    user_namespace=False,
    net_namespace=False,
    pid_namespace=False,
    mount_namespace=False,
    root=os.getuid() == 0,
)


@functools.cache
def capabilities() -> Capabilities:
    """Probed in a child process (the probe forks, which a threaded server should not do itself); a probe that
    fails counts as a host without any protection."""
    try:
        result = subprocess.run(
            [sys.executable, "-I", "-S", str(ENTER_SCRIPT), "--probe"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        return Capabilities(**json.loads(result.stdout))
    except (OSError, subprocess.SubprocessError, ValueError, TypeError):
        return NOTHING


def unsandboxed_allowed() -> bool:
    return os.environ.get(ALLOW_UNSANDBOXED_ENV, "") == "1"


def require_sandbox(allow_unsandboxed: bool | None = None) -> Capabilities:
    """The host's capabilities; SandboxUnavailable when one that matters is missing, unless the operator opted in
    (argument, else `RFTLAB_ALLOW_UNSANDBOXED=1`): the process then runs with what the host has."""
    found = capabilities()
    missing = found.missing()
    allowed = unsandboxed_allowed() if allow_unsandboxed is None else allow_unsandboxed
    if missing and not allowed:
        raise SandboxUnavailable(
            "refusing to run untrusted evaluator code: this host offers no "
            + " and no ".join(missing)
            + f"; to run it anyway, set {ALLOW_UNSANDBOXED_ENV}=1 (or the server's opt-in flag)"
        )
    return found
