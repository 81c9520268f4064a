"""MCP sessions over streamable HTTP, driven from synchronous code.

The MCP SDK is asynchronous and each session's transport lives in an anyio task group that must be entered and
left by one task. `McpClient` runs an event loop on a thread of its own; every session is one task there that
opens the connection, initializes, lists the tools, then serves batches of tool calls (run concurrently) until it
is closed. The synchronous side waits on futures.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

OPEN_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class ToolResult:
    text: str
    is_error: bool
    seconds: float


def function_tools(mcp_tools: list[Any]) -> list[dict[str, Any]]:
    """MCP tools as OpenAI-style function tools (what chat templates take as `tools=`)."""
    return [
        {
            "type": "function",
            "function": {
                "name": tool.name,
                "description": tool.description or "",
                "parameters": tool.input_schema or {"type": "object", "properties": {}},
            },
        }
        for tool in mcp_tools
    ]


def error_text(error: BaseException) -> str:
    """An exception (possibly an anyio/asyncio exception group) as one line."""
    while getattr(error, "exceptions", None):
        error = error.exceptions[0]
    return f"{type(error).__name__}: {error}".rstrip(": ")


class McpSession:
    """One open MCP session: its tools (as OpenAI function tools) and `call` for a turn's tool calls."""

    def __init__(self, client: McpClient):
        self._client = client
        self._requests: asyncio.Queue[tuple[list[ToolCall], Future] | None] = asyncio.Queue()
        self.ready: Future[list[dict[str, Any]]] = Future()
        self.closed: Future[None] = Future()
        self.tools: list[dict[str, Any]] = []

    def call(self, calls: list[ToolCall]) -> Future[list[ToolResult]]:
        """Run `calls` concurrently; the future holds their results in call order."""
        results: Future[list[ToolResult]] = Future()
        if self.closed.done():
            results.set_exception(ConnectionError("the MCP session has ended"))
            return results
        self._client.loop.call_soon_threadsafe(self._requests.put_nowait, (calls, results))
        return results

    def close(self) -> None:
        self._client.loop.call_soon_threadsafe(self._requests.put_nowait, None)

    async def run(self, url: str, headers: dict[str, str], call_timeout_s: float) -> None:
        try:
            async with (
                create_mcp_http_client(headers=headers) as http,
                streamable_http_client(url, http_client=http) as (read, write),
                ClientSession(read, write) as session,
            ):
                await session.initialize()
                listed = await session.list_tools()
                self.ready.set_result(function_tools(listed.tools))
                while (request := await self._requests.get()) is not None:
                    calls, results = request
                    done = await asyncio.gather(*(self._call(session, c, call_timeout_s) for c in calls))
                    results.set_result(list(done))
        except BaseException as error:  # reported through the futures, never lost
            if not self.ready.done():
                self.ready.set_exception(ConnectionError(f"MCP server {url}: {error_text(error)}"))
            while not self._requests.empty():
                request = self._requests.get_nowait()
                if request is not None:
                    request[1].set_exception(ConnectionError(error_text(error)))
            if isinstance(error, asyncio.CancelledError):
                raise
        finally:
            self.closed.set_result(None)

    @staticmethod
    async def _call(session: ClientSession, call: ToolCall, timeout_s: float) -> ToolResult:
        started = time.perf_counter()
        try:
            result = await asyncio.wait_for(session.call_tool(call.name, call.arguments), timeout_s)
        except TimeoutError:
            text, is_error = f"timed out after {timeout_s:g} s", True
        except Exception as error:  # the model sees it; the rollout goes on
            text, is_error = error_text(error), True
        else:
            parts = [getattr(block, "text", None) or f"[{block.type} content]" for block in result.content]
            text, is_error = "\n".join(parts), bool(result.is_error)
        return ToolResult(text, is_error, time.perf_counter() - started)


async def list_tools(url: str, headers: dict[str, str], timeout_s: float) -> list[dict[str, Any]]:
    """Open a session, initialize and list the tools (as OpenAI function tools): what a probe of a server does."""

    async def probe() -> list[dict[str, Any]]:
        async with (
            create_mcp_http_client(headers=headers) as http,
            streamable_http_client(url, http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            return function_tools((await session.list_tools()).tools)

    return await asyncio.wait_for(probe(), timeout_s)


class McpClient:
    """An event loop on a thread of its own, serving MCP sessions to synchronous callers."""

    def __init__(self, url: str, headers: dict[str, str] | None = None, call_timeout_s: float = 30.0):
        self.url, self.headers, self.call_timeout_s = url, dict(headers or {}), call_timeout_s
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="mcp-client", daemon=True)
        self._thread.start()

    def open(self, count: int) -> list[McpSession]:
        """`count` fresh sessions, each initialized and with its tools listed; ConnectionError if one fails
        (the others are closed)."""
        sessions = [McpSession(self) for _ in range(count)]
        for session in sessions:
            asyncio.run_coroutine_threadsafe(
                session.run(self.url, self.headers, self.call_timeout_s), self.loop
            )
        try:
            for session in sessions:
                session.tools = session.ready.result(OPEN_TIMEOUT_S)
        except BaseException:
            self.close_all(sessions)
            raise
        return sessions

    def close_all(self, sessions: list[McpSession]) -> None:
        for session in sessions:
            session.close()
        for session in sessions:
            session.closed.result(OPEN_TIMEOUT_S)

    def shutdown(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()

    def __enter__(self) -> McpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
