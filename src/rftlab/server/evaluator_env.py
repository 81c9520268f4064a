"""Evaluator environments: an evaluator whose folder has a requirements.txt runs on a virtual environment of its
own, built with uv and keyed by a hash of the requirements and the Python version, so evaluators with the same
requirements share one (the first build installs, the next ones find it ready).

Only wheels are installed (`--only-binary :all:`), so no package's build script runs on the server, and every line
must be a plain requirement (`name[extras] specifier ; marker` or `name @ https://...`): pip options (`-e`, `-r`,
`--index-url`) and local paths are refused, naming the line. An evaluator without requirements runs on the server's
own interpreter.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from uv import find_uv_bin

from rftlab.server.clean_env import clean_environment
from rftlab.server.evaluator_build import BuildError

ENVS_DIRNAME = "evaluator-envs"
INSTALL_TIMEOUT_S = 600
"""Fireworks gives an evaluator build 10 minutes."""
READY_MARKER = "rftlab-ready"
PASSED_TO_UV = (
    "UV_CACHE_DIR",
    "UV_INDEX_URL",
    "UV_DEFAULT_INDEX",
    "UV_EXTRA_INDEX_URL",
    "UV_FIND_LINKS",
    "UV_OFFLINE",
    "UV_NATIVE_TLS",
    "XDG_CACHE_HOME",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
)
# Evaluators run without network. litellm (pulled in by eval-protocol) otherwise fetches its model cost map in a
# background thread at import, and the warning it logs when that fails can break the import half-way.
OFFLINE_DEFAULTS_PTH = "import os; os.environ.setdefault('LITELLM_LOCAL_MODEL_COST_MAP', 'True')\n"

_key_locks: dict[str, threading.Lock] = {}
_key_locks_guard = threading.Lock()


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
    if line.startswith("-"):
        raise BuildError(f"{where}: pip options are not supported; list package requirements only")
    try:
        requirement = Requirement(line)
    except InvalidRequirement as error:
        raise BuildError(f"{where} is not a package requirement ({error})") from None
    if requirement.url and not requirement.url.startswith("https://"):
        raise BuildError(f"{where}: only https:// URLs can be installed, not local files")
    return str(requirement)


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


def ensure_environment(state_root: Path, requirements: list[str], log: Callable[[str], None]) -> Path:
    """The python of the environment for `requirements`, built first if no evaluator has built it yet."""
    if not requirements:
        return Path(sys.executable)
    env_dir = environment_dir(state_root, requirements)
    with _lock_for(env_dir.name):
        if (env_dir / READY_MARKER).is_file():
            log(f"environment {env_dir.name} is ready (shared with evaluators of the same requirements)")
            return env_dir / "bin" / "python"
        building = env_dir.with_name(f"{env_dir.name}.building-{uuid.uuid4().hex[:8]}")
        try:
            _build(building, requirements, log)
            shutil.rmtree(env_dir, ignore_errors=True)
            building.rename(env_dir)
        finally:
            shutil.rmtree(building, ignore_errors=True)
    return env_dir / "bin" / "python"


def _lock_for(key: str) -> threading.Lock:
    with _key_locks_guard:
        return _key_locks.setdefault(key, threading.Lock())


def _build(env_dir: Path, requirements: list[str], log: Callable[[str], None]) -> None:
    env_dir.parent.mkdir(parents=True, exist_ok=True)
    log(f"creating environment {env_dir.name.split('.')[0]} for: {', '.join(requirements)}")
    # --relocatable: the folder is renamed into place once complete.
    _uv(["venv", "--quiet", "--relocatable", "--python", sys.executable, str(env_dir)], log)
    requirements_file = env_dir / "requirements.txt"
    requirements_file.write_text("\n".join(requirements) + "\n")
    python = env_dir / "bin" / "python"
    install = ["pip", "install", "--only-binary", ":all:", "--compile-bytecode", "--python", str(python)]
    _uv([*install, "-r", str(requirements_file)], log)
    site_packages = next((env_dir / "lib").glob("python*/site-packages"))
    (site_packages / "rftlab_offline.pth").write_text(OFFLINE_DEFAULTS_PTH)
    (env_dir / READY_MARKER).write_text("")


def _uv(args: list[str], log: Callable[[str], None]) -> None:
    env = clean_environment(**{name: os.environ[name] for name in PASSED_TO_UV if name in os.environ})
    try:
        result = subprocess.run(
            [find_uv_bin(), *args],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise BuildError(f"installing the requirements took longer than {INSTALL_TIMEOUT_S} s") from None
    output = (result.stdout + result.stderr).strip()
    if output:
        log(output)
    if result.returncode != 0:
        lines = [line for line in output.splitlines() if line.strip()]
        detail = "\n".join(lines[-8:]) or f"uv exited with code {result.returncode}"
        raise BuildError(f"installing requirements.txt failed:\n{detail}")
