"""A real MCP server (tests/integration/mcp_test_server.py) on 127.0.0.1, started for a test."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from server_harness import free_port, wait_for

SERVER_SCRIPT = Path(__file__).with_name("mcp_test_server.py")


@dataclass
class RunningMcp:
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def stats(self) -> dict:
        return httpx.get(f"http://127.0.0.1:{self.port}/stats", timeout=10).json()


def _answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/stats", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def mcp_server(token: str | None = None, only_tool: str | None = None) -> Iterator[RunningMcp]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            str(SERVER_SCRIPT),
            str(port),
            *([token] if token else []),
            *(["--only", only_tool] if only_tool else []),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: _answers(port) or process.poll() is not None, "the MCP test server", timeout_s=60)
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        yield RunningMcp(port)
    finally:
        process.terminate()
        process.wait(timeout=10)
