"""The large-file flow: `:getUploadEndpoint` hands out a URL on this server, the client PUTs the file there, and
`:validateUpload` takes it in. Like a signed URL, the random token in the path is the only credential the PUT needs.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select
from sqlalchemy.orm import Session

from rftlab.server.api_common import Ctx, ServerContext, get_resource, parse_body
from rftlab.server.errors import ApiError, failed_precondition, not_found
from rftlab.server.layout import StateLayout
from rftlab.server.schemas import UploadEndpointRequest
from rftlab.server.store import Resource, UploadSlot

router = APIRouter()


def upload_endpoint(
    ctx: ServerContext,
    base_url: str,
    account_id: str,
    kind: str,
    resource_id: str,
    body: Any,
    check: Callable[[Resource], None] = lambda resource: None,
) -> dict:
    """The `:getUploadEndpoint` reply: a PUT URL for the requested file, once `check` accepts the resource."""
    wanted = parse_body(UploadEndpointRequest, body)
    (filename, size) = next(iter(wanted.filename_to_size.items()))
    with ctx.store.session() as session:
        check(get_resource(session, account_id, kind, resource_id))
        url = _open_slot(session, account_id, kind, resource_id, filename, size, base_url)
    return {"filenameToSignedUrls": {filename: url}}


def _open_slot(
    session: Session, account_id: str, kind: str, resource_id: str, filename: str, size: int, base_url: str
) -> str:
    token = secrets.token_urlsafe(32)
    session.add(
        UploadSlot(
            token=token,
            account_id=account_id,
            kind=kind,
            resource_id=resource_id,
            filename=filename,
            size=size,
        )
    )
    return f"{base_url.rstrip('/')}/v1/uploads/{token}"


def take_upload(ctx: ServerContext, account_id: str, kind: str, resource_id: str) -> tuple[Path, str]:
    """The most recent file PUT for this resource (moved out of the uploads folder), and its file name."""
    with ctx.store.session() as session:
        slot = session.scalars(
            select(UploadSlot)
            .where(
                UploadSlot.account_id == account_id,
                UploadSlot.kind == kind,
                UploadSlot.resource_id == resource_id,
                UploadSlot.received.is_(True),
            )
            .order_by(UploadSlot.create_time.desc())
        ).first()
        if slot is None:
            raise failed_precondition(
                f"accounts/{account_id}/{kind}/{resource_id}: nothing uploaded yet; call :getUploadEndpoint and PUT "
                "the file to the returned URL first"
            )
        staged = ctx.layout.upload_file(slot.token)
        taken = staged.with_suffix(".taken")
        staged.rename(taken)
        filename = slot.filename
        session.delete(slot)
    return taken, filename


def _receive_path(layout: StateLayout, token: str) -> Path:
    path = layout.upload_file(token)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


@router.put("/v1/uploads/{token}")
async def put_upload(token: str, request: Request, ctx: Ctx) -> dict:
    slot = await run_in_threadpool(_find_slot, ctx, token)
    path = _receive_path(ctx.layout, token)
    partial = path.with_suffix(".partial")
    received = 0
    with partial.open("wb") as out:
        async for chunk in request.stream():
            received += len(chunk)
            if received > slot.size:
                break
            out.write(chunk)
    if received != slot.size:
        partial.unlink(missing_ok=True)
        raise ApiError(
            400,
            "INVALID_ARGUMENT",
            f"{slot.filename}: declared {slot.size} bytes in :getUploadEndpoint, got {received}",
        )
    partial.rename(path)
    await run_in_threadpool(_mark_received, ctx, token)
    return {}


def _find_slot(ctx: ServerContext, token: str) -> UploadSlot:
    with ctx.store.session() as session:
        slot = session.get(UploadSlot, token)
        if slot is None:
            raise not_found("upload URL")
        return slot


def _mark_received(ctx: ServerContext, token: str) -> None:
    with ctx.store.session() as session:
        slot = session.get(UploadSlot, token)
        if slot is not None:
            slot.received = True
