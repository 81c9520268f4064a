"""Account secrets: create, get, update, list, delete (`/v1/accounts/{a}/secrets`), as Fireworks' SDK and `ep`
send them (`{keyName, name, value}`).

A value is write-only: encrypted with the server key before it is stored, never returned, never logged (request
errors name the field, not the value). It reaches only that account's evaluators, as the environment variable
`keyName` (`account_secrets`).
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter
from sqlalchemy import select

from rftlab.server.api_common import (
    AccountId,
    Ctx,
    JsonBody,
    ServerContext,
    get_resource,
    insert_resource,
    now,
    short_id,
)
from rftlab.server.errors import invalid
from rftlab.server.layout import StateLayout
from rftlab.server.resource_routes import ORDER_COLUMNS, add_list_get_delete
from rftlab.server.schemas import check_resource_id
from rftlab.server.server_key import server_fernet
from rftlab.server.store import Resource, Store

KIND = "secrets"
router = APIRouter(prefix="/v1/accounts/{account_id}")

KEY_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
RESERVED_KEY_NAMES = ("PATH", "HOME", "PWD", "TMPDIR")
RESERVED_KEY_PREFIXES = ("PYTHON", "LD_", "RFTLAB_")


@router.post("/secrets")
def create_secret(account_id: AccountId, ctx: Ctx, body: JsonBody = None) -> dict:
    fields = _fields(body, required=("keyName", "value"))
    key_name = _key_name(fields["keyName"])
    secret_id = check_resource_id(
        short_id(fields.get("name") or key_name.lower().replace("_", "-"), KIND, account_id), "name"
    )
    resource = Resource(
        account_id=account_id,
        kind=KIND,
        resource_id=secret_id,
        display_name=key_name,
        state="ACTIVE",
        body={
            "name": f"accounts/{account_id}/secrets/{secret_id}",
            "keyName": key_name,
            "ciphertext": _encrypt(ctx, fields["value"]),
        },
    )
    insert_resource(ctx, resource)
    return _render(resource)


@router.patch("/secrets/{secret_id}")
def update_secret(secret_id: str, account_id: AccountId, ctx: Ctx, body: JsonBody = None) -> dict:
    fields = _fields(body, required=())
    with ctx.store.session() as session:
        resource = get_resource(session, account_id, KIND, secret_id)
        changed = dict(resource.body)
        if "keyName" in fields:
            changed["keyName"] = resource.display_name = _key_name(fields["keyName"])
        if "value" in fields:
            changed["ciphertext"] = _encrypt(ctx, fields["value"])
        resource.body = changed
        resource.update_time = now()
        return _render(resource)


def account_secrets(store: Store, layout: StateLayout, account_id: str) -> dict[str, str]:
    """The account's secrets as environment variables (`keyName` -> value), for its evaluator processes only."""
    fernet = server_fernet(layout.root)
    with store.reading() as session:
        rows = session.scalars(
            select(Resource).where(Resource.account_id == account_id, Resource.kind == KIND)
        ).all()
        return {row.body["keyName"]: fernet.decrypt(row.body["ciphertext"].encode()).decode() for row in rows}


def _fields(body: Any, required: tuple[str, ...]) -> dict[str, str]:
    """The body's string fields; without pydantic, so that no error message can quote a value."""
    if not isinstance(body, dict):
        raise invalid("the request body must be a JSON object")
    for name in required:
        if not body.get(name):
            raise invalid(f"{name}: is required")
    for name, value in body.items():
        if name not in ("keyName", "name", "value"):
            raise invalid(f"{name}: unknown field (a secret has keyName, name and value)")
        if not isinstance(value, str):
            raise invalid(f"{name}: must be a string")
    return body


def _key_name(key_name: str) -> str:
    if not KEY_NAME_PATTERN.match(key_name):
        raise invalid(
            f"keyName: {key_name!r} must be an environment variable name (letters, digits, '_'; not a digit first)"
        )
    if key_name in RESERVED_KEY_NAMES or key_name.startswith(RESERVED_KEY_PREFIXES):
        raise invalid(
            f"keyName: {key_name!r} would change how the evaluator process runs; choose another name"
        )
    return key_name


def _encrypt(ctx: ServerContext, value: str) -> str:
    return server_fernet(ctx.layout.root).encrypt(value.encode()).decode()


def _render(resource: Resource) -> dict[str, str]:
    return {"name": resource.body["name"], "keyName": resource.body["keyName"]}


add_list_get_delete(router, KIND, "secret", ORDER_COLUMNS, files=None, shown=_render)
