"""The local record of each job under outputs/: one folder per job, named after its job id.

    outputs/<date>/<time>/                 one launch (a single run or a sweep), never shared
        <job id>/
            config.yaml     resolved config, local paths absolute, secrets redacted
            request.json    the create call (method, url, params, body), secrets redacted
            meta.json       backend, inputs and their hashes, overrides, git SHA + dirty flag, versions
            response.json   what the backend answered to the create (or the existing job on a repeat)
            job.json        the job as the backend last returned it
            status.jsonl    the state history, one JSON object per change
            metrics.json    the per-step metrics once the job ended (wait=true, `rftlab wait`)
        invalid-<n>/error.json   a sweep point that did not validate: its overrides and problems

Everything written passes through `rftlab.fireworks.redact`.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import datetime, timezone
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from rftlab.fireworks.contract import TERMINAL_STATES
from rftlab.fireworks.redact import redact, redact_text
from rftlab.runs.dashboard import job_dashboard_url

_YamlDumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml's is ~10x faster where installed
_VERSIONED = ("rftlab", "hydra-core", "omegaconf", "pydantic", "httpx", "torch", "transformers", "peft")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(redact(value), indent=2) + "\n")


@lru_cache(maxsize=8)
def git_state(cwd: Path) -> dict[str, Any]:
    """The commit and dirty flag of the git work tree holding `cwd` (the user's project), if any."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    sha = git("rev-parse", "HEAD")
    if sha is None:
        return {"sha": None, "dirty": None}
    return {"sha": sha, "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


@lru_cache(maxsize=1)
def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


class RunRecord:
    """One job's folder."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @property
    def job_id(self) -> str:
        return self.path.name

    def exists(self) -> bool:
        return (self.path / "request.json").is_file()

    def write_plan(self, config: dict[str, Any], request_json: str, meta: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "config.yaml").write_text(yaml.dump(redact(config), Dumper=_YamlDumper, sort_keys=False))
        (self.path / "request.json").write_text(redact_text(request_json))
        _write_json(self.path / "meta.json", meta)

    def write_response(self, response: dict[str, Any]) -> None:
        _write_json(self.path / "response.json", response)

    def write_job(self, job: dict[str, Any]) -> None:
        """Store the job as last seen; append to status.jsonl when its state or message changed."""
        _write_json(self.path / "job.json", job)
        entry = {"state": job.get("state"), "message": (job.get("status") or {}).get("message", "")}
        history = self.status_history()
        if not history or {k: history[-1].get(k) for k in entry} != entry:
            with (self.path / "status.jsonl").open("a") as stream:
                stream.write(json.dumps(redact({"time": now_iso(), **entry})) + "\n")

    def write_metrics(self, metrics: list[dict[str, Any]]) -> None:
        _write_json(self.path / "metrics.json", {"metrics": metrics})

    def read_json(self, name: str) -> dict[str, Any] | None:
        path = self.path / name
        return json.loads(path.read_text()) if path.is_file() else None

    @property
    def meta(self) -> dict[str, Any]:
        return self.read_json("meta.json") or {}

    @property
    def overrides(self) -> list[str]:
        return self.meta.get("overrides", [])

    @property
    def job(self) -> dict[str, Any] | None:
        """The job as the backend last returned it; None for a dry run or a refused create."""
        return self.read_json("job.json")

    @property
    def metrics(self) -> list[dict[str, Any]]:
        return (self.read_json("metrics.json") or {}).get("metrics", [])

    @property
    def request_body(self) -> dict[str, Any]:
        return (self.read_json("request.json") or {}).get("body", {})

    @property
    def kind(self) -> str:
        """`dry run` (nothing sent), `refused` (the backend refused the create: `error` says why) or
        `submitted` (a job exists on the backend)."""
        if self.meta.get("dry_run"):
            return "dry run"
        return "submitted" if (self.path / "job.json").is_file() else "refused"

    @property
    def dashboard_url(self) -> str:
        """The job's page: on the local backend's dashboard, or in Fireworks' web app."""
        backend = self.meta.get("backend") or {}
        return job_dashboard_url(backend.get("kind", "fireworks"), backend.get("base_url", ""), self.job_id)

    @property
    def error(self) -> str:
        """Why the backend refused the create (from response.json), else ""."""
        error = (self.read_json("response.json") or {}).get("error")
        if not error:
            return ""
        return str(error.get("message", error)) if isinstance(error, dict) else str(error)

    def read_config(self) -> dict[str, Any]:
        return yaml.safe_load((self.path / "config.yaml").read_text())

    def request_text(self) -> str:
        return (self.path / "request.json").read_text()

    def status_history(self) -> list[dict[str, Any]]:
        path = self.path / "status.jsonl"
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    @property
    def state(self) -> str | None:
        job = self.job
        return job.get("state") if job else None

    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES


def new_launch_dir(base: Path) -> Path:
    """A new folder `BASE/<date>/<time with microseconds>[-N]` for one launch, created here so that no other
    launch, even one started in the same microsecond, can take it."""
    stamp = datetime.now()
    day = base / stamp.strftime("%Y-%m-%d")
    day.mkdir(parents=True, exist_ok=True)
    name, attempt = stamp.strftime("%H-%M-%S-%f"), 1
    while True:
        candidate = day / (name if attempt == 1 else f"{name}-{attempt}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            attempt += 1


def write_invalid_point(launch_dir: Path, index: int, overrides: list[str], problems: list[str]) -> Path:
    path = launch_dir / f"invalid-{index}"
    path.mkdir(parents=True, exist_ok=True)
    _write_json(path / "error.json", {"overrides": overrides, "problems": problems})
    return path


def find_runs(root: Path) -> list[RunRecord]:
    """The run folders at or below `root` (a run, a launch or a whole outputs/ tree), oldest first."""
    root = Path(root)
    if (root / "request.json").is_file():
        return [RunRecord(root)]
    found = [RunRecord(p.parent) for p in root.rglob("request.json")]
    return sorted(
        found, key=lambda run: (run.path.parent.name, os.stat(run.path / "request.json").st_mtime_ns)
    )


def latest_launch(outputs: Path) -> Path | None:
    """The most recent launch folder under `outputs` (folders are named by date and time)."""
    launches = sorted({run.path.parent for run in find_runs(outputs)}, key=str)
    return launches[-1] if launches else None
