"""The bundled MCP calculator: a `multiply` tool over streamable HTTP, for the tool-use demo.

    python server.py [--port 8318]      # serves http://127.0.0.1:PORT/mcp

Stateless (every request stands alone) with JSON responses: the cheapest streamable-HTTP server for many short
sessions, one per rollout.
"""

from __future__ import annotations

import argparse

from mcp.server.mcpserver import MCPServer

DEFAULT_PORT = 8318

calculator = MCPServer("calculator", log_level="WARNING")


@calculator.tool()
def multiply(a: int, b: int) -> int:
    """The product a * b of two integers."""
    return a * b


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    args = parser.parse_args()
    calculator.run(
        "streamable-http", host="127.0.0.1", port=args.port, json_response=True, stateless_http=True
    )


if __name__ == "__main__":
    main()
