"""A user's own MCP server for tests: `python mcp_test_server.py PORT [REQUIRED_BEARER_TOKEN] [--only TOOL]`.

Streamable HTTP (stateful: one MCP session per client) on 127.0.0.1. Tools: `multiply`, `slow` (sleeps), `fail`
(raises), `long_text` (n words). `GET /stats` counts the `initialize` requests (one per session) and the
`Authorization` headers seen, so tests can check one session per rollout and the key that arrived.
"""

from __future__ import annotations

import asyncio
import json
import sys

import uvicorn
from mcp.server.mcpserver import MCPServer
from starlette.requests import Request
from starlette.responses import JSONResponse

server = MCPServer("test-tools", log_level="WARNING")
STATS = {"initialize": 0, "authorization": [], "calls": 0}


@server.tool()
def multiply(a: int, b: int) -> int:
    """The product a * b."""
    STATS["calls"] += 1
    return a * b


@server.tool()
async def slow(seconds: float) -> str:
    """Sleep, then answer."""
    await asyncio.sleep(seconds)
    return "done"


@server.tool()
def fail(reason: str) -> str:
    """Always fails."""
    raise RuntimeError(f"failing on purpose: {reason}")


@server.tool()
def long_text(words: int) -> str:
    """`words` words."""
    return " ".join(["word"] * words)


@server.custom_route("/stats", methods=["GET"])
async def stats(_request: Request) -> JSONResponse:
    return JSONResponse(STATS)


def counting(app, token: str | None):
    """Counts initialize requests; answers 401 without the expected bearer token."""

    async def wrapped(scope, receive, send):
        if scope["type"] != "http" or scope["path"] == "/stats":
            return await app(scope, receive, send)
        headers = dict(scope["headers"])
        authorization = headers.get(b"authorization", b"").decode()
        if token and authorization != f"Bearer {token}":
            response = JSONResponse({"error": "unauthorized"}, status_code=401)
            return await response(scope, receive, send)
        chunks = []

        async def replay():
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        if scope["method"] == "POST":
            while True:
                message = await receive()
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    break
            try:
                body = json.loads(b"".join(chunks) or b"{}")
            except json.JSONDecodeError:
                body = {}
            if isinstance(body, dict) and body.get("method") == "initialize":
                STATS["initialize"] += 1
                STATS["authorization"].append(authorization)
            return await app(scope, replay, send)
        return await app(scope, receive, send)

    return wrapped


if __name__ == "__main__":
    arguments = sys.argv[1:]
    if "--only" in arguments:  # serve one tool, e.g. the one the tiny calculator model knows
        at = arguments.index("--only")
        for name in {"multiply", "slow", "fail", "long_text"} - {arguments[at + 1]}:
            server.remove_tool(name)
        del arguments[at : at + 2]
    port, token = int(arguments[0]), (arguments[1] if len(arguments) > 1 else None)
    app = server.streamable_http_app(json_response=True)
    uvicorn.run(counting(app, token), host="127.0.0.1", port=port, log_level="warning", lifespan="on")
