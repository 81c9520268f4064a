"""The outermost layer of every request: a request id, a bound on the body's size, and the last word on an
unexpected exception (a logged 500 naming the request id, never a dropped connection).

The body bound depends on the route: an upload URL's PUT and a multipart `:upload` may carry a file, an evaluator
create its inline code; every other request is a small JSON document. A body is refused at its declared
Content-Length when it can be, else as soon as the bytes read pass the bound.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.requests import ClientDisconnect

from rftlab.server.limits import ServerLimits, flag

log = logging.getLogger("rftlab.server")

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Message, Receive, Send], Awaitable[None]]
REQUEST_ID_HEADER = b"x-request-id"
MULTIPART_OVERHEAD_BYTES = 64 << 10


class BodyTooLarge(Exception):
    pass


def body_bound(limits: ServerLimits, method: str, path: str) -> tuple[int, str, str]:
    """(bytes, the flag that sets it, what to do instead) for a request to `path`."""
    if path.startswith("/v1/uploads/"):
        return limits.upload_url_bytes, flag("max_upload_url_mb"), ""
    if path.endswith(":upload"):
        return (
            limits.upload_bytes + MULTIPART_OVERHEAD_BYTES,
            flag("max_upload_mb"),
            "; upload a larger file through :getUploadEndpoint",
        )
    if method == "POST" and path.rstrip("/").endswith(("/evaluatorsV2", "/evaluators")):
        return limits.inline_code_bytes, flag("max_inline_code_mb"), "; upload larger code as a .tar.gz"
    return limits.request_bytes, flag("max_request_mb"), ""


class Guard:
    def __init__(self, app: App, limits: ServerLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = secrets.token_hex(8)
        bound, bound_flag, instead = body_bound(self.limits, scope["method"], scope["path"])
        too_large = (
            f"{scope['method']} {scope['path']}: the request body is larger than {bound:,} bytes, this "
            f"server's limit ({bound_flag}){instead}"
        )
        if _declared_length(scope) > bound:
            await _answer(send, request_id, 413, "INVALID_ARGUMENT", too_large)
            return
        received = 0
        over = started = False

        async def counted_receive() -> Message:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > bound:
                    over = True
                    raise BodyTooLarge(too_large)
            return message

        async def tagged_send(message: Message) -> None:
            nonlocal started
            if over and not started:
                return  # whatever the route made of the cut-off body: the 413 below answers instead
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), (REQUEST_ID_HEADER, request_id.encode())]
            await send(message)

        try:
            await self.app(scope, counted_receive, tagged_send)
        except ClientDisconnect:
            log.info("request %s: %s %s: the client went away", request_id, scope["method"], scope["path"])
            return
        except Exception:
            if not over:
                log.exception("request %s: %s %s failed", request_id, scope["method"], scope["path"])
                if not started:
                    message = f"internal error (request id {request_id}); the server log has the details"
                    await _answer(send, request_id, 500, "INTERNAL", message)
                return
        if over and not started:
            await _answer(send, request_id, 413, "INVALID_ARGUMENT", too_large)


def _declared_length(scope: Message) -> int:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


async def _answer(send: Send, request_id: str, code: int, status: str, message: str) -> None:
    body = json.dumps({"error": {"code": code, "message": message, "status": status}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": code,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (REQUEST_ID_HEADER, request_id.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
