"""The guard in front of every request, on a real uvicorn on 127.0.0.1: an unexpected exception becomes a logged 500
with a request id and the connection stays usable; bodies over the route's bound are 413 at any size."""

from __future__ import annotations

import logging
import socket
import threading
import time

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request

from rftlab.server.guard import Guard, body_bound
from rftlab.server.limits import ServerLimits


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def base_url():
    app = FastAPI()
    app.add_middleware(Guard, limits=ServerLimits(max_request_mb=0.01))

    @app.get("/boom")
    def boom() -> dict:
        raise RuntimeError("a bug with a secret-looking detail: hunter2")

    @app.post("/echo")
    async def echo(request: Request) -> dict:
        return {"bytes": len(await request.body())}

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_an_unexpected_exception_is_a_logged_500_with_a_request_id(base_url, caplog):
    with caplog.at_level(logging.ERROR, logger="rftlab.server"), httpx.Client(base_url=base_url) as client:
        failed = client.get("/boom")
        assert client.post("/echo", content=b"same connection").json() == {"bytes": 15}
    request_id = failed.headers["x-request-id"]
    error = failed.json()["error"]
    assert failed.status_code == 500 and error["status"] == "INTERNAL"
    assert request_id in error["message"] and "hunter2" not in error["message"]
    assert any(request_id in record.getMessage() for record in caplog.records)


def test_a_body_over_the_bound_is_413_declared_or_streamed(base_url):
    payload = b"x" * 20_000
    with httpx.Client(base_url=base_url) as client:
        declared = client.post("/echo", content=payload)
        streamed = client.post("/echo", content=iter([payload[:8000], payload[8000:]]))
        small = client.post("/echo", content=b"ok")
    for response in (declared, streamed):
        assert response.status_code == 413 and "--max-request-mb" in response.json()["error"]["message"]
    assert small.json() == {"bytes": 2}


def test_each_route_has_its_own_bound():
    limits = ServerLimits()
    assert body_bound(limits, "PUT", "/v1/uploads/t")[0] == limits.upload_url_bytes
    assert body_bound(limits, "POST", "/v1/accounts/a/datasets/d:upload")[0] > limits.upload_bytes
    assert body_bound(limits, "POST", "/v1/accounts/a/evaluatorsV2")[0] == limits.inline_code_bytes
    assert body_bound(limits, "POST", "/v1/accounts/a/reinforcementFineTuningJobs")[0] == limits.request_bytes


def test_limits_are_rftlab_serve_flags_and_refuse_nonsense():
    from rftlab.server.limits import limits_from
    from rftlab.server.serve import build_parser

    limits = limits_from(build_parser().parse_args(["--max-upload-mb", "10", "--max-rows", "5"]))
    assert (limits.upload_bytes, limits.max_rows) == (10 << 20, 5)
    with pytest.raises(ValueError, match="--max-rows must be above 0"):
        limits_from(build_parser().parse_args(["--max-rows", "0"]))
