"""What a sandboxed process may touch: paths, network, resource limits and environment."""

from __future__ import annotations

import os
import site
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

SYSTEM_READ_ONLY = (
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/etc/alternatives",
    "/etc/ca-certificates",
    "/etc/ca-certificates.conf",
    "/etc/gai.conf",
    "/etc/group",
    "/etc/host.conf",
    "/etc/hosts",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/mime.types",
    "/etc/nsswitch.conf",
    "/etc/os-release",
    "/etc/passwd",
    "/etc/pki",
    "/etc/protocols",
    "/etc/resolv.conf",
    "/etc/services",
    "/etc/ssl",
    "/etc/timezone",
    "/proc/cpuinfo",
    "/proc/meminfo",
    "/sys/devices/system/cpu",
)
"""Programs, libraries and the harmless parts of /etc; not /etc as a whole (shadow, ssh host keys), not /home,
/root, /tmp, /var or /proc (only the process's own /proc entry is added by the launcher)."""
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
"""Read and written like files; every other device is out of reach. /dev/shm is the process's own tmpfs where the
host has mount namespaces (the launcher mounts it), else out of reach: the host's is shared by every process."""

PASSED_ENV = (
    "PATH",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
)
"""The only names taken from the server's environment: none of them can hold a secret."""


@dataclass(frozen=True)
class Limits:
    """Per-process resource limits (None: the server's own). CPU seconds count over the process's whole life."""

    address_space_bytes: int | None = 4 << 30
    cpu_seconds: int | None = 3600
    open_files: int | None = 512
    file_size_bytes: int | None = 256 << 20
    processes: int | None = 512
    """RLIMIT_NPROC counts every process and thread of the user, and the kernel never applies it to root."""

    def as_dict(self) -> dict[str, int]:
        return {name: value for name, value in self.__dict__.items() if value is not None}


@dataclass(frozen=True)
class SandboxPolicy:
    """Beyond the system and Python install (read-only) and a fresh scratch folder (read-write, HOME and TMPDIR),
    what one kind of sandboxed process may use."""

    read_only: tuple[Path, ...] = ()
    """For example the evaluator's own code folder and the script that runs it."""
    read_write: tuple[Path, ...] = ()
    network: bool = False
    limits: Limits = field(default_factory=Limits)
    env: Mapping[str, str] = field(default_factory=dict)
    """Added to the allowlisted environment: an account's own declared secrets, nothing of the server's."""
    scratch_parent: Path | None = None
    """Where the per-process scratch folders are made (default: the system temp folder)."""
    scratch_bytes: int = 256 << 20
    """The scratch folder's total size, where the host has mount namespaces (a tmpfs: it is held in memory)."""

    def readable_paths(self) -> list[str]:
        return [*SYSTEM_READ_ONLY, *python_install_paths(), *(str(path) for path in self.read_only)]

    def writable_paths(self, scratch: Path) -> list[str]:
        return [*DEVICES, str(scratch), *(str(path) for path in self.read_write)]

    def environment(self, scratch: Path) -> dict[str, str]:
        env = {name: os.environ[name] for name in PASSED_ENV if name in os.environ}
        env.update(HOME=str(scratch), TMPDIR=str(scratch / "tmp"))
        env.update(self.env)
        return env


def python_install_paths() -> list[str]:
    """The interpreter, its standard library and the environment's site-packages (symlinks resolved)."""
    paths = {
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        sys.base_exec_prefix,
        os.path.dirname(os.path.realpath(sys.executable)),
        *site.getsitepackages(),
    }
    return sorted({os.path.realpath(path) for path in paths})
