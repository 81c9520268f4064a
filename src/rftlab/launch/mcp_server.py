"""The job's MCP server (`mcp_server` config group): named, registered and checked before the job is created.

An existing resource id is used as it is. An endpoint URL is registered as an `mcpServers` resource whose id is a
hash of the URL and its authentication, so a repeated launch reuses it; its key, read from the environment variable
`api_key_env`, is uploaded as an account secret first and never appears in a request or a record. The bundled
calculator is started on 127.0.0.1 when nothing answers at its address. A server that is not ACTIVE stops the
launch with the reason the backend gives.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from rftlab.fireworks.client import ConflictError, FireworksClient, NotFoundError
from rftlab.launch import ids
from rftlab.launch.spec import McpServerSpec
from rftlab.paths import ASSETS_DIR, state_dir

BUNDLED_SERVERS = {"calculator": ASSETS_DIR / "mcp_calculator" / "server.py"}
START_TIMEOUT_S = 60.0


class McpServerError(RuntimeError):
    pass


@dataclass(frozen=True)
class McpServerRef:
    name: str
    """Its full resource name, what the job's `mcpServer` holds."""
    create_body: dict[str, Any] | None = None
    """What registering it sends (None: an existing resource, used as it is)."""
    api_key_env: str | None = None
    bundled: str | None = None

    @property
    def resource_id(self) -> str:
        return self.name.rsplit("/", 1)[-1]

    def secret_id(self) -> str:
        return f"{self.resource_id}-key"

    def create_request(self, base_url: str, account_id: str) -> dict[str, Any]:
        """The registration request, as a dry run shows it."""
        return {
            "method": "POST",
            "url": f"{base_url.rstrip('/')}/v1/accounts/{account_id}/mcpServers",
            "params": {"mcpServerId": self.resource_id},
            "body": self.create_body,
        }


def mcp_server_ref(spec: McpServerSpec, account_id: str) -> McpServerRef | None:
    if spec.id:
        return McpServerRef(ids.resource_name(account_id, "mcpServers", spec.id))
    if not spec.url:
        return None
    identity = {"url": spec.url, "auth": spec.auth, "key_env": spec.api_key_env}
    slug = f"mcp-{spec.bundled or urlparse(spec.url).hostname or 'server'}"
    resource_id = ids.with_hash(slug, ids.json_sha256(identity))
    body: dict[str, Any] = {
        "displayName": slug[:63],
        "endpointUrl": spec.url,
        "remoteHosted": spec.bundled is None,
        "authenticationType": spec.auth,
    }
    if spec.api_key_env:
        body["apiKeySecret"] = f"accounts/{account_id}/secrets/{resource_id}-key"
    return McpServerRef(
        ids.resource_name(account_id, "mcpServers", resource_id), body, spec.api_key_env, spec.bundled
    )


def _answers(url: str) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname, parsed.port or 80), timeout=1):
            return True
    except OSError:
        return False


def start_bundled(name: str, url: str) -> None:
    """Start the bundled server `name` on `url`'s port unless something answers there already."""
    if _answers(url):
        return
    log = state_dir() / f"mcp-{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        subprocess.Popen(
            [sys.executable, str(BUNDLED_SERVERS[name]), "--port", str(urlparse(url).port)],
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=Path.home(),
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _answers(url):
        if time.monotonic() > deadline:
            raise McpServerError(f"the bundled MCP {name} did not start at {url}; see {log}")
        time.sleep(0.3)


def ensure_mcp_server(client: FireworksClient, ref: McpServerRef) -> dict[str, Any]:
    """The server's resource, registered first if it is not there; McpServerError unless it is ACTIVE."""
    if ref.bundled and ref.create_body:
        start_bundled(ref.bundled, ref.create_body["endpointUrl"])
    path = f"/v1/accounts/{client.account_id}/mcpServers"
    try:
        server = client.request("GET", f"{path}/{ref.resource_id}")
    except NotFoundError:
        if ref.create_body is None:
            raise McpServerError(f"mcp_server.id: {ref.name} not found") from None
        if ref.api_key_env:
            key = os.environ.get(ref.api_key_env)
            if not key:
                raise McpServerError(f"mcp_server.api_key_env: ${ref.api_key_env} is not set") from None
            secrets = f"/v1/accounts/{client.account_id}/secrets"
            try:
                client.request(
                    "POST", secrets, json={"keyName": ref.api_key_env, "name": ref.secret_id(), "value": key}
                )
            except ConflictError:
                client.request("PATCH", f"{secrets}/{ref.secret_id()}", json={"value": key})
        server = client.request("POST", path, params={"mcpServerId": ref.resource_id}, json=ref.create_body)
    if server.get("state") != "ACTIVE":
        message = server.get("status", {}).get("message", "")
        raise McpServerError(f"MCP server {ref.name} is {server.get('state')}, not ACTIVE: {message}")
    return server
