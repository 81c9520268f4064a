"""A recording reverse proxy on 127.0.0.1 in front of a real server: tests read what a client actually sent
(method, path, JSON body) without touching the client or the server."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

HOP_BY_HOP = {"content-length", "transfer-encoding", "connection", "content-encoding", "date", "server"}


@dataclass
class Exchange:
    method: str
    path: str
    status: int
    body: Any
    """The decoded JSON request body; None for an empty or non-JSON one (multipart, a file PUT)."""
    authorized: bool


@dataclass
class WireRecorder:
    upstream: str
    exchanges: list[Exchange] = field(default_factory=list)

    def __enter__(self) -> WireRecorder:
        recorder, client = self, httpx.Client(base_url=self.upstream, timeout=600)

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                content = self.rfile.read(length) if length else b""
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                response = client.request(self.command, self.path, content=content, headers=headers)
                try:
                    body = json.loads(content) if content else None
                except (ValueError, UnicodeDecodeError):
                    body = None
                recorder.exchanges.append(
                    Exchange(
                        self.command, self.path, response.status_code, body, "authorization" in self.headers
                    )
                )
                self.send_response(response.status_code)
                for name, value in response.headers.items():
                    if name.lower() not in HOP_BY_HOP:
                        self.send_header(name, value)
                self.send_header("content-length", str(len(response.content)))
                self.end_headers()
                self.wfile.write(response.content)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._client = client
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._client.close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def find(self, method: str, path_part: str) -> list[Exchange]:
        return [e for e in self.exchanges if e.method == method and path_part in e.path]
