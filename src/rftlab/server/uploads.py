"""The large-file flow: `:getUploadEndpoint` hands out a URL on this server, the client PUTs the file there, and
`:validateUpload` takes it in. Like a signed URL, the random token in the path is the only credential the PUT needs.

A declared size is bounded (`--max-upload-url-mb`); an upload URL never used, a PUT abandoned half-way and a file
never validated are deleted `--upload-ttl-hours` after their last byte (`expire_uploads`, run by the scheduler).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select
from sqlalchemy.orm import Session

from rftlab.server.api_common import Ctx, ServerContext, get_resource, parse_body
from rftlab.server.errors import failed_precondition, invalid, not_found
from rftlab.server.layout import StateLayout
from rftlab.server.limits import flag
from rftlab.server.schemas import UploadEndpointRequest
from rftlab.server.store import Resource, Store, UploadSlot

router = APIRouter()
log = logging.getLogger("rftlab.server")
MAX_FILE_NAME_CHARS = 255
IN_FLIGHT_SUFFIXES = (".partial", ".multipart", ".taken")
"""Files of the uploads folder that a request or a build is writing or reading right now."""
ORPHAN_GRACE_S = 60.0
"""A file whose slot is not (yet) in the database is kept this long: its slot may be a moment old."""


def check_file_name(name: str, field: str) -> str:
    """A plain file name: no folder, no control characters (a NUL cannot be stored or opened), not too long."""
    if (
        name in ("", ".", "..")
        or "/" in name
        or any(ord(char) < 32 or ord(char) == 127 for char in name)
        or len(name) > MAX_FILE_NAME_CHARS
    ):
        raise invalid(
            f"{field}: {name[:80]!r} must be a plain file name: no '/', no control characters, at most "
            f"{MAX_FILE_NAME_CHARS} characters"
        )
    return name


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
    check_file_name(filename, "filenameToSize")
    if size > ctx.limits.upload_url_bytes:
        raise invalid(
            f"filenameToSize: {filename} declares {size:,} bytes; this server takes files up to "
            f"{ctx.limits.upload_url_bytes:,} bytes ({flag('max_upload_url_mb')})"
        )
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
        try:
            staged.rename(taken)
        except FileNotFoundError:
            raise failed_precondition(
                f"accounts/{account_id}/{kind}/{resource_id}: the uploaded file expired; upload it again"
            ) from None
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
    try:
        with partial.open("wb") as out:
            async for chunk in request.stream():
                received += len(chunk)
                if received > slot.size:
                    break
                out.write(chunk)
        if received != slot.size:
            raise invalid(
                f"{slot.filename}: declared {slot.size} bytes in :getUploadEndpoint, got {received}"
            )
        partial.rename(path)
    finally:
        partial.unlink(missing_ok=True)
    if not await run_in_threadpool(_mark_received, ctx, token):
        path.unlink(missing_ok=True)
        raise not_found("upload URL (it expired during the upload)")
    return {}


def _find_slot(ctx: ServerContext, token: str) -> UploadSlot:
    with ctx.store.session() as session:
        slot = session.get(UploadSlot, token)
        if slot is None:
            raise not_found("upload URL")
        return slot


def _mark_received(ctx: ServerContext, token: str) -> bool:
    with ctx.store.session() as session:
        slot = session.get(UploadSlot, token)
        if slot is None:
            return False
        slot.received = True
        slot.create_time = time.time()  # the time-to-live of a received file runs from its last byte
        return True


def expire_uploads(store: Store, layout: StateLayout, ttl_s: float, at_start: bool = False) -> int:
    """Delete the upload slots and files idle for more than `ttl_s`; at server start, also every file a request
    or build of the previous server left half-written. The number of files and slots deleted."""
    cutoff = time.time() - ttl_s
    orphan_before = time.time() - ORPHAN_GRACE_S
    deleted = 0
    with store.session() as session:
        for slot in session.scalars(select(UploadSlot).where(UploadSlot.create_time < cutoff)):
            partial = layout.upload_file(slot.token).with_suffix(".partial")
            if _mtime(partial) >= cutoff:
                continue  # a PUT still writing
            layout.upload_file(slot.token).unlink(missing_ok=True)
            session.delete(slot)
            deleted += 1
        live = set(session.scalars(select(UploadSlot.token)))
    for path in layout.uploads_dir.glob("*") if layout.uploads_dir.is_dir() else ():
        in_flight = path.suffix in IN_FLIGHT_SUFFIXES
        orphan = (in_flight and at_start) or (
            path.name not in live and not in_flight and _mtime(path) < orphan_before
        )
        if orphan or _mtime(path) < cutoff:
            path.unlink(missing_ok=True)
            deleted += 1
    if deleted:
        log.info("expired %d upload slot(s) and file(s) idle for more than %.0f s", deleted, ttl_s)
    return deleted


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
