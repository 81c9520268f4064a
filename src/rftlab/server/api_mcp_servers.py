"""MCP servers: an account resource (`/v1/accounts/{a}/mcpServers`) that RFT jobs name in `mcpServer`.

At create (and when a PATCH changes how to reach it) serve probes the endpoint: an MCP session over streamable
HTTP, `initialize` then `tools/list`. A server that answers is ACTIVE with its tools recorded; one that does not is
FAILED, its `status.message` saying why. An API key never travels in the request: `apiKeySecret` names one of the
account's secrets, read when the server is probed and when a job's rollouts connect (`tool_settings`).
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal
from urllib.parse import urlparse

from fastapi import APIRouter
from pydantic import Field, field_validator

from rftlab.engine.api import JobFailed
from rftlab.engine.mcp_client import error_text, list_tools
from rftlab.engine.settings import ToolSettings
from rftlab.server.api_common import AccountId, Ctx, JsonBody, get_resource, insert_resource, now, parse_body
from rftlab.server.api_secrets import account_secrets
from rftlab.server.errors import invalid
from rftlab.server.layout import StateLayout
from rftlab.server.resource_routes import STATEFUL_ORDER_COLUMNS, add_list_get_delete, render
from rftlab.server.schemas import Camel, check_resource_id
from rftlab.server.store import Resource, Store, find_resource

KIND = "mcpServers"
PROBE_TIMEOUT_S = 20.0
router = APIRouter(prefix="/v1/accounts/{account_id}")
OUTPUT_ONLY_FIELDS = ("name", "state", "status", "createTime", "updateTime", "tools")


class McpServerBody(Camel):
    display_name: str | None = Field(None, max_length=63)
    description: str | None = None
    endpoint_url: str
    remote_hosted: bool = True
    authentication_type: Literal["OPEN", "API_KEY", "BEARER_TOKEN", "OAUTH2"] = "OPEN"
    api_key_secret: str | None = None
    max_qps: int | None = None
    public: bool | None = None
    simulated: bool | None = None
    annotations: dict[str, str] | None = None

    @field_validator("endpoint_url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"{url!r} must be an http(s) URL of a streamable-HTTP MCP endpoint")
        return url

    @field_validator("authentication_type")
    @classmethod
    def _no_oauth(cls, kind: str) -> str:
        if kind == "OAUTH2":
            raise ValueError(
                "OAUTH2 is not supported by the local backend; use API_KEY, BEARER_TOKEN or OPEN"
            )
        return kind


def _body(raw: Any) -> McpServerBody:
    if isinstance(raw, dict):
        raw = {key: value for key, value in raw.items() if key not in OUTPUT_ONLY_FIELDS}
    return parse_body(McpServerBody, raw)


def _check_secret(store: Store, account_id: str, body: McpServerBody) -> None:
    if body.authentication_type == "OPEN":
        return
    if not body.api_key_secret:
        raise invalid(f"apiKeySecret: required with authenticationType {body.authentication_type}")
    secret_id = body.api_key_secret.rsplit("/", 1)[-1]
    if (
        body.api_key_secret != secret_id
        and body.api_key_secret != f"accounts/{account_id}/secrets/{secret_id}"
    ):
        raise invalid(f"apiKeySecret: {body.api_key_secret!r} is not a secret of accounts/{account_id}")
    with store.reading() as session:
        if find_resource(session, account_id, "secrets", secret_id) is None:
            raise invalid(
                f"apiKeySecret: accounts/{account_id}/secrets/{secret_id} not found; create it first "
                "(POST /v1/accounts/{a}/secrets {keyName, value})"
            )


def connection_headers(
    store: Store, layout: StateLayout, account_id: str, body: dict[str, Any]
) -> dict[str, str]:
    """The HTTP headers that authenticate to the server, its key read from the account's secrets."""
    kind = body.get("authenticationType", "OPEN")
    if kind == "OPEN":
        return {}
    secret_id = body["apiKeySecret"].rsplit("/", 1)[-1]
    with store.reading() as session:
        secret = find_resource(session, account_id, "secrets", secret_id)
    if secret is None:
        raise LookupError(f"apiKeySecret {body['apiKeySecret']} no longer exists")
    key = account_secrets(store, layout, account_id)[secret.body["keyName"]]
    return {"Authorization": f"Bearer {key}"} if kind == "BEARER_TOKEN" else {"X-API-Key": key}


def probe(store: Store, layout: StateLayout, account_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """The output fields after probing the endpoint: state, status and the tools it lists."""
    try:
        headers = connection_headers(store, layout, account_id, body)
        tools = asyncio.run(list_tools(body["endpointUrl"], headers, PROBE_TIMEOUT_S))
    except Exception as error:  # every failure to reach it is the resource's FAILED status
        reason = (
            f"no answer within {PROBE_TIMEOUT_S:g} s"
            if isinstance(error, TimeoutError)
            else error_text(error)
        )
        return {
            "state": "FAILED",
            "status": {"code": "UNAVAILABLE", "message": f"probing {body['endpointUrl']}: {reason}"},
            "tools": [],
        }
    return {
        "state": "ACTIVE",
        "status": {"code": "OK", "message": f"{len(tools)} tool(s)"},
        "tools": [
            {"name": t["function"]["name"], "description": t["function"]["description"]} for t in tools
        ],
    }


@router.post("/mcpServers")
def create_mcp_server(
    account_id: AccountId, ctx: Ctx, mcpServerId: str | None = None, body: JsonBody = None
) -> dict:
    if not mcpServerId:
        raise invalid("mcpServerId: is required (POST .../mcpServers?mcpServerId=ID)")
    server_id = check_resource_id(mcpServerId, "mcpServerId")
    fields = _body(body)
    _check_secret(ctx.store, account_id, fields)
    spec = {"name": f"accounts/{account_id}/{KIND}/{server_id}", **fields.dump()}
    spec["displayName"] = spec.get("displayName") or server_id
    spec.update(probe(ctx.store, ctx.layout, account_id, spec))
    resource = Resource(
        account_id=account_id,
        kind=KIND,
        resource_id=server_id,
        display_name=spec["displayName"],
        state=spec["state"],
        body=spec,
    )
    insert_resource(ctx, resource)
    return render(resource)


@router.patch("/mcpServers/{mcp_server_id}")
def update_mcp_server(mcp_server_id: str, account_id: AccountId, ctx: Ctx, body: JsonBody = None) -> dict:
    with ctx.store.reading() as session:
        current = dict(get_resource(session, account_id, KIND, mcp_server_id).body)
    given = (
        {k: v for k, v in (body or {}).items() if k not in OUTPUT_ONLY_FIELDS}
        if isinstance(body, dict)
        else body
    )
    merged = _body({**{k: v for k, v in current.items() if k not in OUTPUT_ONLY_FIELDS}, **(given or {})})
    _check_secret(ctx.store, account_id, merged)
    spec = {"name": current["name"], **merged.dump()}
    reach = ("endpointUrl", "authenticationType", "apiKeySecret")
    if any(spec.get(key) != current.get(key) for key in reach) or current["state"] != "ACTIVE":
        spec.update(probe(ctx.store, ctx.layout, account_id, spec))
    else:
        spec.update({key: current[key] for key in ("state", "status", "tools")})
    with ctx.store.session() as session:
        resource = get_resource(session, account_id, KIND, mcp_server_id)
        resource.body, resource.state = spec, spec["state"]
        resource.display_name = spec.get("displayName") or mcp_server_id
        resource.update_time = now()
        return render(resource)


add_list_get_delete(
    router, KIND, "mcp_server", STATEFUL_ORDER_COLUMNS, lambda layout, a, i: layout.root / KIND / a / i
)


def tool_settings(
    store: Store, layout: StateLayout, account_id: str, spec: dict[str, Any]
) -> ToolSettings | None:
    """How the job's rollouts reach its MCP server (None without one); JobFailed when it cannot be used now."""
    name = spec.get("mcpServer")
    if not name:
        return None
    with store.reading() as session:
        server = find_resource(session, account_id, KIND, name.rsplit("/", 1)[-1])
        body = dict(server.body) if server is not None else None
    if body is None:
        raise JobFailed(f"mcpServer {name} no longer exists")
    try:
        headers = connection_headers(store, layout, account_id, body)
    except LookupError as error:
        raise JobFailed(f"mcpServer {name}: {error}") from None
    return ToolSettings(endpoint_url=body["endpointUrl"], headers=headers)
