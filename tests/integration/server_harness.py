"""Running the real `rftlab serve` in a subprocess for tests, and small helpers to drive it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from rftlab import cli
from rftlab.fireworks.credentials import read_auth_ini
from rftlab.paths import ASSETS_DIR

ARITHMETIC_ROWS = ASSETS_DIR / "arithmetic" / "train.jsonl"
EXACT_MATCH = ASSETS_DIR / "arithmetic" / "exact_match.py"
DATASET, EVALUATOR = "accounts/local/datasets/rows", "accounts/local/evaluators/exact"
TERMINAL_STATES = {
    "JOB_STATE_COMPLETED",
    "JOB_STATE_FAILED",
    "JOB_STATE_CANCELLED",
    "JOB_STATE_EARLY_STOPPED",
}

T = TypeVar("T")


SERVER_SECRETS = {
    "FIREWORKS_API_KEY": "fw-marker-in-server-env",
    "WANDB_API_KEY": "wandb-marker-in-server-env",
}
"""Secrets in the environment of the shared training server, which no worker or evaluator may see."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition: Callable[[], T], what: str, timeout_s: float = 180.0, every_s: float = 0.3) -> T:
    """Poll until `condition()` is truthy and return it; the timeout only keeps a broken run from hanging."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(every_s)


@dataclass
class LocalServer:
    home: Path
    state_dir: Path
    database_url: str | None = None
    max_running_jobs: int = 1
    extra_env: dict[str, str] = field(default_factory=dict)
    extra_args: list[str] = field(default_factory=list)
    """More `rftlab serve` flags (e.g. limits)."""
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @classmethod
    def under(cls, root: Path, **settings: Any) -> LocalServer:
        """A server (not started yet) whose HOME and state dir are `root`/home and `root`/state."""
        return cls(home=root / "home", state_dir=root / "state", **settings)

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *_exc_info: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "HOME": str(self.home),
            "HF_HUB_OFFLINE": "1",
            "RFTLAB_HOME": str(self.state_dir),
            **self.extra_env,
        }

    def start(self) -> LocalServer:
        args = ["--port", str(self.port), "--state-dir", str(self.state_dir)]
        args += ["--max-running-jobs", str(self.max_running_jobs), *self.extra_args]
        if self.database_url:
            args += ["--database-url", self.database_url]
        self.home.mkdir(parents=True, exist_ok=True)
        log = (self.home / "server.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "rftlab.server.serve", *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: kill_all() takes the workers with it
        )
        wait_for(self._healthy, "the server to answer /healthz", timeout_s=60)
        return self

    def _healthy(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"server exited with {self.process.returncode}: {self.log_tail()}")
        try:
            return httpx.get(f"{self.base_url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def log_tail(self) -> str:
        return (self.home / "server.log").read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill_all()
        self.process = None

    def kill_all(self) -> None:
        """SIGKILL the server and every process it started."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.process = None

    def local_key(self) -> str:
        return read_auth_ini(self.home / ".fireworks" / "profiles" / "rftlab-local" / "auth.ini")["api_key"]

    def add_account(self, account_id: str) -> str:
        args = [sys.executable, "-m", "rftlab.server.serve", "--state-dir", str(self.state_dir)]
        if self.database_url:
            args += ["--database-url", self.database_url]
        result = subprocess.run(
            [*args, "--add-account", account_id], env=self.env, capture_output=True, text=True, check=True
        )
        return result.stdout.strip()

    def client(self, api_key: str | None = None) -> httpx.Client:
        key = api_key or self.local_key()
        return httpx.Client(base_url=self.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60)

    def local_job_ids(self) -> list[str]:
        """The ids of every job of account `local`, one entry per job."""
        with self.client() as client:
            return job_ids(client, "local")


def arithmetic_jsonl(rows: int) -> bytes:
    with ARITHMETIC_ROWS.open("rb") as lines:
        return b"".join(next(lines) for _ in range(rows))


def upload_dataset(client: httpx.Client, account: str, dataset_id: str, content: bytes) -> httpx.Response:
    created = client.post(f"/v1/accounts/{account}/datasets", json={"datasetId": dataset_id, "dataset": {}})
    assert created.status_code == 200, created.text
    return client.post(
        f"/v1/accounts/{account}/datasets/{dataset_id}:upload", files={"file": ("rows.jsonl", content)}
    )


def create_evaluator(client: httpx.Client, account: str, evaluator_id: str, code: str | None = None) -> dict:
    body = {
        "evaluatorId": evaluator_id,
        "evaluator": {
            "criteria": [
                {
                    "type": "CODE_SNIPPETS",
                    "codeSnippets": {
                        "language": "python",
                        "fileContents": {"exact_match.py": code or EXACT_MATCH.read_text()},
                        "entryFile": "exact_match.py",
                        "entryFunc": "evaluate",
                    },
                }
            ]
        },
    }
    response = client.post(f"/v1/accounts/{account}/evaluatorsV2", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def add_training_inputs(client: httpx.Client) -> None:
    """In account local: datasets `rows` (32 rows, i.e. four chunks of `small_job`) and `one-chunk` (8 rows), and
    the exact-match evaluator `exact`."""
    assert upload_dataset(client, "local", "rows", arithmetic_jsonl(32)).status_code == 200
    assert upload_dataset(client, "local", "one-chunk", arithmetic_jsonl(8)).status_code == 200
    create_evaluator(client, "local", "exact")


def small_job(dataset: str, evaluator: str, **overrides: Any) -> dict:
    """A job of a few quick steps on the tiny model: 8 rows per chunk, 4 candidates, 8 tokens."""
    body: dict[str, Any] = {
        "dataset": dataset,
        "evaluator": evaluator,
        "trainingConfig": {"baseModel": "tiny-arith", "learningRate": 0.002, "loraRank": 8, "epochs": 1},
        "inferenceParameters": {"responseCandidatesCount": 4, "maxOutputTokens": 8, "temperature": 1.0},
        "chunkSize": 8,
    }
    for key, value in overrides.items():
        body[key] = {**body[key], **value} if isinstance(value, dict) and key in body else value
    return body


def create_job(client: httpx.Client, account: str, job_id: str, body: dict) -> dict:
    response = client.post(
        f"/v1/accounts/{account}/reinforcementFineTuningJobs",
        params={"reinforcementFineTuningJobId": job_id},
        json=body,
    )
    assert response.status_code == 200, response.text
    return response.json()


def job_ids(client: httpx.Client, account: str) -> list[str]:
    """The ids of the account's jobs (one page of up to 200)."""
    listed = client.get(f"/v1/accounts/{account}/reinforcementFineTuningJobs", params={"pageSize": 200})
    return [job["name"].rsplit("/", 1)[1] for job in listed.json()["reinforcementFineTuningJobs"]]


def job_state(client: httpx.Client, account: str, job_id: str) -> dict:
    response = client.get(f"/v1/accounts/{account}/reinforcementFineTuningJobs/{job_id}")
    assert response.status_code == 200, response.text
    return response.json()


def job_metrics(client: httpx.Client, account: str, job_id: str) -> list[dict]:
    response = client.get(f"/v1/accounts/{account}/reinforcementFineTuningJobs/{job_id}/metrics")
    assert response.status_code == 200, response.text
    return response.json()["metrics"]


def output_metrics(job: dict) -> dict:
    return json.loads(job["outputMetrics"])


POSTGRES_URL_ENV = "RFTLAB_TEST_POSTGRES_URL"


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new, empty database on the PostgreSQL server named by $RFTLAB_TEST_POSTGRES_URL (the test is skipped
    when it is unset), dropped afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    base_url = os.environ.get(POSTGRES_URL_ENV)
    if not base_url:
        pytest.skip(
            f"{POSTGRES_URL_ENV} is unset: start a server with `bash scripts/start_postgres.sh` and export it"
        )
    name = f"rftlab_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(base_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def worker_pids(state_dir: Path) -> list[int]:
    """Live job worker processes of the server using `state_dir`."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if b"rftlab.server.worker" in argv and str(state_dir).encode() in argv and state != "Z":
            pids.append(int(proc.name))
    return pids


def finished(client: httpx.Client, account: str, job_id: str) -> dict | None:
    job = job_state(client, account, job_id)
    return job if job["state"] in TERMINAL_STATES else None


@contextmanager
def project_folder(
    server: LocalServer, folder: Path, monkeypatch: pytest.MonkeyPatch, rows: int
) -> Iterator[Path]:
    """`folder` as the working directory, holding `rows.jsonl` with `rows` arithmetic rows; HOME is the server's,
    where its first start wrote the key. Afterwards the jobs launched from it are cancelled, which leaves the
    single job slot free for the next test."""
    monkeypatch.setenv("HOME", str(server.home))
    monkeypatch.setenv("RFTLAB_HOME", str(server.state_dir))
    monkeypatch.chdir(folder)
    (folder / "rows.jsonl").write_bytes(arithmetic_jsonl(rows))
    yield folder
    if (folder / "outputs").is_dir():
        cli.main(["cancel", str(folder / "outputs")])
