"""Evaluator environments: an evaluator whose folder has a requirements.txt runs on a virtual environment of its
own, built with uv and keyed by a hash of the requirements and the Python version, so evaluators with the same
requirements share one (the first build installs, the next ones find it ready).

The install handles untrusted input too (the user's requirement lines, wheels that may hold anything, and where
allowed a source distribution's setup code), so uv runs in rftlab.sandbox like the evaluator itself: it reads the system, the Python install and any local package
folder the operator configured (UV_FIND_LINKS, a file:// index), writes only the folder being built (the
environment and its own download cache) and a scratch HOME, and reaches the network only to fetch packages (none
when UV_OFFLINE=1). `InstallSettings` bounds its time and disk. Only wheels are installed unless the operator
allows source builds (`rftlab serve --evaluator-sdists`); an sdist's setup code then runs in that same sandbox.

Every line must be a plain requirement (`name[extras] specifier ; marker` or `name @ https://...`): pip options,
editable installs and local paths are refused, naming the line. An evaluator without requirements runs on the
server's own interpreter.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import shutil
import stat
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from packaging.requirements import InvalidRequirement, Requirement
from uv import find_uv_bin

from rftlab import sandbox
from rftlab.server.clean_env import PASSED_TO_UV
from rftlab.server.evaluator_build import BuildError
from rftlab.server.limits import ServerLimits
from rftlab.server.store import ServerSetting, Store

ENVS_DIRNAME = "evaluator-envs"
INSTALL_SETTING = "evaluatorInstall"
READY_MARKER = "rftlab-ready"
MAX_ENV_FILES = 300_000
"""Files and folders one environment (with its download cache) may hold while it installs: bounds the time a
disk check takes, and the inodes a hostile build can use."""
LOCAL_SOURCES = (
    "UV_FIND_LINKS",
    "UV_INDEX_URL",
    "UV_DEFAULT_INDEX",
    "UV_EXTRA_INDEX_URL",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
)
"""Variables that may name local files or folders, which the install may then read."""
NO_WHEEL_SIGNS = (
    "has no usable wheels",
    "building from source is disabled",
    "source distributions is disabled",
)
# Evaluators run without network. litellm (pulled in by eval-protocol) otherwise fetches its model cost map in a
# background thread at import, and the warning it logs when that fails can break the import half-way.
OFFLINE_DEFAULTS_PTH = "import os; os.environ.setdefault('LITELLM_LOCAL_MODEL_COST_MAP', 'True')\n"

_key_locks: dict[str, threading.Lock] = {}
_key_locks_guard = threading.Lock()


@dataclass(frozen=True)
class InstallSettings:
    """What one environment's install may take; `rftlab serve` sets them (see server/limits.py)."""

    timeout_s: float = 600.0
    """Fireworks gives an evaluator build 10 minutes."""
    max_bytes: int = 8 << 30
    """Disk for the environment and its download cache together, checked every second; no file may be larger."""
    allow_sdists: bool = False
    """Build requirements that have no wheel from source (their setup code runs inside the sandbox)."""

    @classmethod
    def within(cls, limits: ServerLimits) -> InstallSettings:
        return cls(
            timeout_s=limits.evaluator_install_minutes * 60,
            max_bytes=limits.evaluator_env_bytes,
            allow_sdists=limits.evaluator_sdists,
        )


def save_install_settings(store: Store, settings: InstallSettings) -> None:
    """Kept in the database like the executor and the storage URL: a job's worker that builds an evaluator's
    environment on its node (with a storage URL) reads them, so that build has the server's bounds."""
    with store.session() as session:
        session.merge(ServerSetting(name=INSTALL_SETTING, value=asdict(settings)))


def configured_install_settings(store: Store) -> InstallSettings:
    """The install settings `rftlab serve` was started with (the defaults when none were saved)."""
    with store.reading() as session:
        stored = session.get(ServerSetting, INSTALL_SETTING)
        return InstallSettings(**stored.value) if stored is not None else InstallSettings()


def read_requirements(code_dir: Path) -> list[str]:
    """The requirement lines of the folder's requirements.txt (none if it is absent), each one checked."""
    path = code_dir / "requirements.txt"
    if not path.is_file():
        return []
    requirements = []
    for number, raw in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        requirements.append(_checked_requirement(line, number))
    return requirements


def _checked_requirement(line: str, number: int) -> str:
    where = f"requirements.txt line {number}: {line!r}"
    local = (
        f"{where}: local paths cannot be installed (the server installs from the package index only); put "
        "that code in the evaluator folder and import it from there, or publish it and list it by name"
    )
    if line.startswith(("-e", "--editable")):
        raise BuildError(
            f"{where}: editable installs (-e) point at a local folder, which the server cannot install; put "
            "that code in the evaluator folder and import it from there"
        )
    if line.startswith("-"):
        raise BuildError(f"{where}: pip options are not supported; list package requirements only")
    if line.startswith((".", "/", "~", "file:")) or "\\" in line or _names_an_archive(line):
        raise BuildError(local)
    try:
        requirement = Requirement(line)
    except InvalidRequirement as error:
        if "/" in line and "://" not in line:
            raise BuildError(local) from None
        raise BuildError(f"{where} is not a package requirement ({error})") from None
    if requirement.url and requirement.url.startswith("file:"):
        raise BuildError(local)
    if requirement.url and not requirement.url.startswith("https://"):
        raise BuildError(f"{where}: only https:// URLs (to a wheel) can be installed")
    return str(requirement)


def _names_an_archive(line: str) -> bool:
    return "://" not in line and line.lower().endswith((".whl", ".tar.gz", ".tgz", ".zip"))


def environment_key(requirements: list[str]) -> str:
    text = "\n".join([sys.version, *sorted(requirements)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def environment_dir(state_root: Path, requirements: list[str]) -> Path:
    return state_root / ENVS_DIRNAME / environment_key(requirements)


def evaluator_python(state_root: Path, code_dir: Path) -> Path:
    """The interpreter the evaluator in `code_dir` runs on: its environment's, or the server's own when the
    evaluator has no requirements. BuildError if its environment is missing (rebuild the evaluator)."""
    requirements = read_requirements(code_dir)
    if not requirements:
        return Path(sys.executable)
    env_dir = environment_dir(state_root, requirements)
    if not (env_dir / READY_MARKER).is_file():
        raise BuildError(f"the evaluator's environment {env_dir.name} is missing; upload the evaluator again")
    return env_dir / "bin" / "python"


def ensure_environment(
    state_root: Path,
    requirements: list[str],
    log: Callable[[str], None],
    settings: InstallSettings = InstallSettings(),
) -> Path:
    """The python of the environment for `requirements`, built first if no evaluator has built it yet."""
    if not requirements:
        return Path(sys.executable)
    env_dir = environment_dir(state_root, requirements)
    with _lock_for(env_dir.name):
        if (env_dir / READY_MARKER).is_file():
            log(f"environment {env_dir.name} is ready (shared with evaluators of the same requirements)")
            return env_dir / "bin" / "python"
        workspace = env_dir.with_name(f"{env_dir.name}.building-{uuid.uuid4().hex[:8]}")
        try:
            built = Install(workspace, requirements, log, settings).run()
            shutil.rmtree(env_dir, ignore_errors=True)
            built.rename(env_dir)
            _mark_ready(env_dir)
        finally:
            shutil.rmtree(workspace, ignore_errors=True)
    return env_dir / "bin" / "python"


def _lock_for(key: str) -> threading.Lock:
    with _key_locks_guard:
        return _key_locks.setdefault(key, threading.Lock())


def _mark_ready(env_dir: Path) -> None:
    """Written by the server once the sandbox is gone; a file of that name the install left (a link to some file
    of the server's, say) is removed first, never written through."""
    marker = env_dir / READY_MARKER
    marker.unlink(missing_ok=True)
    os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644))


class Install:
    """One environment installed in `workspace` (`env/` and uv's `cache/`), each uv step in the sandbox."""

    def __init__(
        self, workspace: Path, requirements: list[str], log: Callable[[str], None], settings: InstallSettings
    ):
        self.workspace = workspace
        self.env_dir = workspace / "env"
        self.requirements = requirements
        self.log = log
        self.settings = settings
        self.deadline = time.monotonic() + settings.timeout_s

    def run(self) -> Path:
        """The installed environment's folder (still inside the workspace)."""
        (self.workspace / "cache").mkdir(parents=True)
        self.log(
            f"creating environment {self.workspace.name.split('.')[0]} for: {', '.join(self.requirements)}"
        )
        # --relocatable: the folder is moved into place once complete.
        self._uv(
            ["venv", "--no-config", "--quiet", "--relocatable", "--python", sys.executable, str(self.env_dir)]
        )
        # Written before any package code can run, so nothing the install leaves here is written through.
        requirements_file = self.env_dir / "requirements.txt"
        requirements_file.write_text("\n".join(self.requirements) + "\n")
        site_packages = next((self.env_dir / "lib").glob("python*/site-packages"))
        (site_packages / "rftlab_offline.pth").write_text(OFFLINE_DEFAULTS_PTH)
        install = [
            "pip",
            "install",
            "--no-config",
            "--compile-bytecode",
            "--python",
            str(self.env_dir / "bin/python"),
        ]
        if not self.settings.allow_sdists:
            install += ["--only-binary", ":all:"]
        self._uv([*install, "-r", str(requirements_file)])
        if not stat.S_ISDIR(os.lstat(self.env_dir).st_mode):
            raise BuildError("the install replaced its environment folder with a link; the build is refused")
        return self.env_dir

    def _uv(self, args: list[str]) -> None:
        # The sandbox's own timeout is a backstop: `_check` ends the install at its deadline, saying why.
        backstop_s = max(1.0, self.deadline - time.monotonic()) + 30
        try:
            finished = sandbox.run(
                [find_uv_bin(), *args],
                self._policy(),
                cwd=self.workspace,
                timeout_s=backstop_s,
                watch=self._check,
            )
        except sandbox.SandboxUnavailable as error:
            raise BuildError(str(error)) from None
        output = finished.output.strip()
        if output:
            self.log(output)
        if finished.stopped:
            raise BuildError(
                f"installing requirements.txt ({', '.join(self.requirements)}) {finished.stopped}"
            )
        if finished.returncode != 0:
            raise BuildError(self._failure(output, finished.returncode))

    def _policy(self) -> sandbox.SandboxPolicy:
        passed = {name: os.environ[name] for name in PASSED_TO_UV if name in os.environ}
        return sandbox.SandboxPolicy(
            read_only=tuple(local_package_sources(passed)),
            read_write=(self.workspace,),
            network=passed.get("UV_OFFLINE", "") not in ("1", "true"),
            limits=sandbox.Limits(
                cpu_seconds=math.ceil(self.settings.timeout_s), file_size_bytes=self.settings.max_bytes
            ),
            env={**passed, "UV_CACHE_DIR": str(self.workspace / "cache"), "UV_PYTHON_DOWNLOADS": "never"},
        )

    def _check(self) -> str | None:
        """Why the install must stop now, if it must: its time or its disk is spent."""
        if time.monotonic() > self.deadline:
            return (
                f"took longer than {self.settings.timeout_s:g} s, the time an install may take "
                "(rftlab serve --evaluator-install-minutes); list fewer or lighter requirements"
            )
        used, files = disk_usage(self.workspace, MAX_ENV_FILES)
        if used > self.settings.max_bytes or files > MAX_ENV_FILES:
            return (
                f"took more than {self.settings.max_bytes >> 20} MB of disk or {MAX_ENV_FILES} files, what an "
                "environment may take with its downloads (rftlab serve --evaluator-env-mb); list fewer or "
                "lighter requirements"
            )
        return None

    def _failure(self, output: str, returncode: int | None) -> str:
        """uv's error (its first lines and its last ones) and what to do about it, naming the requirement."""
        lines = [line.rstrip() for line in output.splitlines() if line.strip()]
        first = next((n for n, line in enumerate(lines) if line.startswith("error:")), max(0, len(lines) - 8))
        head, rest = lines[first : first + 4], lines[first + 4 :]
        detail = "\n".join(head + (["..."] if len(rest) > 6 else []) + rest[-6:])
        names = ", ".join(_named_in(output, self.requirements) or self.requirements)
        python = f"Python {sys.version_info.major}.{sys.version_info.minor}"
        if not self.settings.allow_sdists and any(sign in output for sign in NO_WHEEL_SIGNS):
            fix = (
                f"{names}: no wheel for {python} on this platform, and this server installs wheels only; pin a "
                "version that publishes one, or ask the operator to allow source builds "
                "(rftlab serve --evaluator-sdists)"
            )
        elif "Failed to build" in output:
            fix = (
                f"{names}: its source build failed; it ran in the sandbox, where it may write only its own build "
                f"folder and read neither HOME nor the server's files; pin a version with a wheel for {python}"
            )
        else:
            fix = (
                f"{names}: check the name and version against the package index the server installs from; the "
                "build log (:getBuildLogEndpoint) has uv's whole output"
            )
        return f"installing requirements.txt failed:\n{detail or f'uv exited with code {returncode}'}\n{fix}"


def _named_in(output: str, requirements: list[str]) -> list[str]:
    """The requirement lines whose package uv's output names."""
    words = {_normalized(word) for word in re.findall(r"[A-Za-z0-9][A-Za-z0-9._-]*", output)}
    return [line for line in requirements if _normalized(Requirement(line).name) in words]


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def local_package_sources(passed: dict[str, str]) -> list[Path]:
    """The local files and folders the operator's uv settings name (a wheel folder, a file:// index, CA certs)."""
    sources = []
    for name in LOCAL_SOURCES:
        for item in re.split(r"[,\s]+", passed.get(name, "")):
            path = unquote(urlparse(item).path) if item.startswith("file:") else item
            if path.startswith("/") and os.path.exists(path):
                sources.append(Path(path).resolve())
    return sources


def disk_usage(root: Path, max_entries: int) -> tuple[int, int]:
    """Bytes on disk under `root` (a hard-linked file counted once, links not followed) and how many entries;
    stops counting past `max_entries`."""
    seen: set[tuple[int, int]] = set()
    used = entries = 0
    folders = [root]
    while folders and entries <= max_entries:
        try:
            with os.scandir(folders.pop()) as listing:
                for entry in listing:
                    entries += 1
                    info = entry.stat(follow_symlinks=False)
                    if stat.S_ISDIR(info.st_mode):
                        folders.append(Path(entry.path))
                    elif info.st_nlink > 1:
                        if (info.st_dev, info.st_ino) in seen:
                            continue
                        seen.add((info.st_dev, info.st_ino))
                    used += info.st_blocks * 512
        except OSError:  # removed while we looked: uv works in this folder
            continue
    return used, entries
