"""The REST client against a real HTTP server on 127.0.0.1 that plays the hosted service's failures."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from rftlab.fireworks.client import ApiError, ConflictError, FireworksClient, NotFoundError


class ScriptedServer:
    """Answers each request with the next scripted (status, headers, body); records what it received."""

    def __init__(self, script: list[tuple[int, dict, dict]]):
        self.script = list(script)
        self.received: list[dict] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                owner.received.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "auth": self.headers.get("Authorization"),
                        "body": self.rfile.read(length).decode() if length else "",
                    }
                )
                status, headers, body = (
                    owner.script.pop(0) if owner.script else (500, {}, {"error": "script over"})
                )
                payload = json.dumps(body).encode()
                self.send_response(status)
                for key, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_DELETE = _answer

            def log_message(self, *args):  # keep test output quiet
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> ScriptedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def error(status: int, code: str, message: str) -> dict:
    return {"error": {"code": status, "status": code, "message": message}}


def client_for(server: ScriptedServer, waits: list[float], **kwargs) -> FireworksClient:
    return FireworksClient(server.url, "test-key-123", "acct", sleep=waits.append, **kwargs)


def test_retries_429_honouring_retry_after_then_500_then_succeeds():
    job = {"name": "accounts/acct/reinforcementFineTuningJobs/j1", "state": "JOB_STATE_PENDING"}
    script = [
        (429, {"Retry-After": "3"}, error(429, "RESOURCE_EXHAUSTED", "quota_exceeded")),
        (500, {}, error(500, "INTERNAL", "try again")),
        (200, {}, job),
    ]
    waits: list[float] = []
    with ScriptedServer(script) as server, client_for(server, waits) as client:
        assert client.create_job("j1", {"dataset": "d"}) == job
    assert len(server.received) == 3
    assert waits[0] == 3.0  # the server's Retry-After, not the backoff schedule
    assert 0 < waits[1] <= client.max_backoff_s
    first = server.received[0]
    assert first["auth"] == "Bearer test-key-123"
    assert first["path"] == "/v1/accounts/acct/reinforcementFineTuningJobs?reinforcementFineTuningJobId=j1"
    assert all(r["body"] == '{"dataset": "d"}' for r in server.received)


def test_retry_after_as_an_http_date_is_honoured_and_capped():
    script = [
        (503, {"Retry-After": "Fri, 31 Dec 2100 23:59:59 GMT"}, error(503, "UNAVAILABLE", "busy")),
        (200, {}, {}),
    ]
    waits: list[float] = []
    with ScriptedServer(script) as server, client_for(server, waits, max_backoff_s=7.0) as client:
        client.get_job("j1")
    assert waits == [7.0]


def test_gives_up_after_max_attempts_with_the_servers_message():
    script = [(502, {}, error(502, "UNAVAILABLE", f"upstream down #{i}")) for i in range(3)]
    waits: list[float] = []
    with (
        ScriptedServer(script) as server,
        client_for(server, waits, max_attempts=3) as client,
        pytest.raises(ApiError, match="upstream down #2") as caught,
    ):
        client.get_job("j1")
    assert caught.value.status_code == 502 and len(server.received) == 3 and len(waits) == 2


def test_client_errors_are_typed_and_not_retried():
    script = [
        (400, {}, error(400, "INVALID_ARGUMENT", "trainingConfig.loraRank: must be a power of two")),
        (404, {}, error(404, "NOT_FOUND", "accounts/acct/datasets/x not found")),
        (409, {}, error(409, "ALREADY_EXISTS", "accounts/acct/evaluators/e already exists")),
    ]
    waits: list[float] = []
    with ScriptedServer(script) as server, client_for(server, waits) as client:
        with pytest.raises(ApiError, match="loraRank: must be a power of two") as bad:
            client.create_job("j", {})
        with pytest.raises(NotFoundError, match="datasets/x not found"):
            client.get_dataset("x")
        with pytest.raises(ConflictError):
            client.create_evaluator("e", {})
    assert bad.value.code == "INVALID_ARGUMENT" and waits == [] and len(server.received) == 3


def test_connection_errors_are_retried():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here once the probe closes
    waits: list[float] = []
    client = FireworksClient(f"http://127.0.0.1:{port}", "k", "acct", max_attempts=3, sleep=waits.append)
    with pytest.raises(httpx.ConnectError):
        client.get_job("j")
    assert len(waits) == 2


def test_list_jobs_follows_page_tokens():
    pages = [
        (200, {}, {"reinforcementFineTuningJobs": [{"name": "a"}, {"name": "b"}], "nextPageToken": "t1"}),
        (200, {}, {"reinforcementFineTuningJobs": [{"name": "c"}], "nextPageToken": "t2"}),
        (200, {}, {"reinforcementFineTuningJobs": [{"name": "d"}]}),
    ]
    with ScriptedServer(pages) as server, client_for(server, []) as client:
        names = [job["name"] for job in client.list_jobs(page_size=2)]
    assert names == ["a", "b", "c", "d"]
    assert [r["path"].split("?")[1] for r in server.received] == [
        "pageSize=2",
        "pageSize=2&pageToken=t1",
        "pageSize=2&pageToken=t2",
    ]


def test_job_verbs_use_fireworks_paths():
    script = [
        (200, {}, {"state": "JOB_STATE_CANCELLED"}),
        (200, {}, {}),
        (200, {}, {}),
        (200, {}, {"metrics": [{"step": 1}]}),
    ]
    with ScriptedServer(script) as server, client_for(server, []) as client:
        client.cancel_job("accounts/acct/reinforcementFineTuningJobs/j")
        client.resume_job("j")
        client.delete_job("j")
        assert client.job_metrics("j") == [{"step": 1}]
    base = "/v1/accounts/acct/reinforcementFineTuningJobs/j"
    assert [(r["method"], r["path"]) for r in server.received] == [
        ("POST", f"{base}:cancel"),
        ("POST", f"{base}:resume"),
        ("DELETE", base),
        ("GET", f"{base}/metrics"),
    ]
