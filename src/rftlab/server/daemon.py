"""Starting the local backend in the background for the launcher (`backend=local`)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from urllib.parse import urlsplit

import httpx

from rftlab.paths import state_dir
from rftlab.sandbox.host import ALLOW_UNSANDBOXED_ENV
from rftlab.server.clean_env import PASSED_TO_UV, clean_environment
from rftlab.server.layout import StateLayout

START_TIMEOUT_S = 60.0
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


class LocalServerError(RuntimeError):
    pass


def is_healthy(base_url: str) -> bool:
    try:
        response = httpx.get(f"{base_url.rstrip('/')}/healthz", timeout=2.0)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


def ensure_local_server(base_url: str) -> None:
    """Reuse the server answering /healthz at `base_url`, or start `rftlab serve` there, detached (state in
    $RFTLAB_HOME or ~/.rftlab, log in its server.log), and wait until it is healthy.

    The server gets an allowlisted environment, never the launcher's secrets (FIREWORKS_API_KEY, WANDB_API_KEY,
    cloud credentials): a job's W&B key reaches the server in the job's request, encrypted at rest there."""
    if is_healthy(base_url):
        return
    parts = urlsplit(base_url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    if host not in LOOPBACK_HOSTS:
        raise LocalServerError(f"nothing answers at {base_url}; start `rftlab serve` on that machine first")
    layout = StateLayout(state_dir())
    layout.root.mkdir(parents=True, exist_ok=True)
    with layout.server_log.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "rftlab.server.serve", "--host", host, "--port", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=server_environment(),
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if is_healthy(base_url):
            return
        if process.poll() is not None:
            raise LocalServerError(f"`rftlab serve` exited with code {process.returncode}: {_tail(layout)}")
        time.sleep(0.2)
    raise LocalServerError(
        f"`rftlab serve` did not become healthy within {START_TIMEOUT_S:.0f} s: {_tail(layout)}"
    )


def server_environment() -> dict[str, str]:
    """The allowlist, plus how uv reaches packages (the server's evaluator builds use it; its workers do not)."""
    opt_in = os.environ.get(ALLOW_UNSANDBOXED_ENV)
    uv = {name: os.environ[name] for name in PASSED_TO_UV if name in os.environ}
    return clean_environment(**uv, **({ALLOW_UNSANDBOXED_ENV: opt_in} if opt_in else {}))


def _tail(layout: StateLayout, lines: int = 5) -> str:
    try:
        text = layout.server_log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) + f" (log: {layout.server_log})"
