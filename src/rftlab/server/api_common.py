"""What every route shares: the server context, bearer auth scoped to one account, timestamps, paging."""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import datetime, timezone
from typing import Annotated, Any, TypeVar

from fastapi import Body, Depends, Request
from pydantic import BaseModel, ValidationError
from sqlalchemy import Select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from rftlab.server.accounts import account_for_key
from rftlab.server.dashboard.sessions import SESSION_COOKIE, account_for_session
from rftlab.server.errors import (
    already_exists,
    describe_validation_errors,
    invalid,
    not_found,
    unauthenticated,
)
from rftlab.server.layout import StateLayout
from rftlab.server.limits import ServerLimits
from rftlab.server.storage import Storage
from rftlab.server.store import Resource, Store, find_resource

ModelT = TypeVar("ModelT", bound=BaseModel)

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
MAX_PAGE_OFFSET = 1 << 31


@dataclass
class ServerContext:
    store: Store
    layout: StateLayout
    wake_scheduler: Callable[[], None]
    limits: ServerLimits = dataclass_field(default_factory=ServerLimits)
    storage: Storage = dataclass_field(default_factory=Storage)
    """Where datasets, evaluator code, checkpoints and models live durably (the state dir, or a storage URL)."""


def context(request: Request) -> ServerContext:
    return request.app.state.context


Ctx = Annotated[ServerContext, Depends(context)]
JsonBody = Annotated[Any, Body()]


def key_owner(request: Request, ctx: Ctx) -> str:
    """The account whose API key is in the `Authorization: Bearer` header; without one, a GET may carry a
    dashboard session cookie instead (reads only: a cookie never authorises a change)."""
    header = request.headers.get("authorization", "")
    if not header and request.method == "GET":
        owner = account_for_session(ctx.store, request.cookies.get(SESSION_COOKIE))
        if owner is not None:
            return owner
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise unauthenticated("missing 'Authorization: Bearer <API key>' header")
    owner = account_for_key(ctx.store, key.strip())
    if owner is None:
        raise unauthenticated("invalid API key")
    return owner


def caller_account(account_id: str, request: Request, ctx: Ctx) -> str:
    """The account named in the path, if the bearer key belongs to it; another account's resources are 404."""
    if key_owner(request, ctx) != account_id:
        raise not_found(f"accounts/{account_id}")
    return account_id


AccountId = Annotated[str, Depends(caller_account)]


def rfc3339(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return (
        datetime.fromtimestamp(timestamp, tz=timezone.utc)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def now() -> float:
    return time.time()


def parse_body(model: type[ModelT], body: Any) -> ModelT:
    if not isinstance(body, dict):
        raise invalid("the request body must be a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as error:
        raise invalid(describe_validation_errors(error.errors())) from None


def short_id(name: str, collection: str, account_id: str) -> str:
    """`accounts/<a>/<collection>/<id>` or a bare id -> the id, if it lives in `account_id`; else NOT_FOUND."""
    prefix = f"accounts/{account_id}/{collection}/"
    if name.startswith(prefix):
        return name[len(prefix) :]
    if "/" in name:
        raise not_found(name)
    return name


def get_resource(session: Session, account_id: str, kind: str, resource_id: str) -> Resource:
    resource = find_resource(session, account_id, kind, resource_id)
    if resource is None:
        raise not_found(f"accounts/{account_id}/{kind}/{resource_id}")
    return resource


def insert_resource(ctx: ServerContext, resource: Resource) -> None:
    """Store a new resource; ALREADY_EXISTS if its account already has one of that kind and id."""
    try:
        with ctx.store.session() as session:
            session.add(resource)
    except IntegrityError:
        raise already_exists(resource.body["name"]) from None


@dataclass(frozen=True)
class PageRequest:
    size: int
    offset: int
    order: list[tuple[str, bool]]
    """(field, descending) pairs from `orderBy`."""


def page_request(
    page_size: int | None, page_token: str | None, order_by: str | None, fields: set[str]
) -> PageRequest:
    if page_size is not None and page_size < 0:
        raise invalid(f"pageSize: must be ≥ 0 (got {page_size})")
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    offset = 0
    if page_token:
        try:
            offset = json.loads(base64.urlsafe_b64decode(page_token.encode()))["offset"]
            if not isinstance(offset, int) or not 0 <= offset <= MAX_PAGE_OFFSET:
                raise ValueError(offset)
        except (binascii.Error, ValueError, KeyError, TypeError, RecursionError):
            raise invalid(
                "pageToken: not a token this server issued; pass nextPageToken as returned"
            ) from None
    order = []
    for part in (order_by or "name").split(","):
        words = part.split()
        if not words:
            continue
        if (
            words[0] not in fields
            or len(words) > 2
            or (len(words) == 2 and words[1].lower() not in ("asc", "desc"))
        ):
            raise invalid(
                f"orderBy: cannot order by {part.strip()!r}; fields: {', '.join(sorted(fields))} [desc]"
            )
        order.append((words[0], len(words) == 2 and words[1].lower() == "desc"))
    return PageRequest(size=size, offset=offset, order=order)


def fetch_page(
    session: Session, query: Select, page: PageRequest, columns: dict[str, Any], tiebreak: Any
) -> tuple[list, str]:
    for field, descending in page.order:
        column = columns[field]
        query = query.order_by(column.desc() if descending else column.asc())
    rows = list(session.scalars(query.order_by(tiebreak).offset(page.offset).limit(page.size + 1)))
    next_token = ""
    if len(rows) > page.size:
        rows = rows[: page.size]
        next_token = base64.urlsafe_b64encode(
            json.dumps({"offset": page.offset + page.size}).encode()
        ).decode()
    return rows, next_token
