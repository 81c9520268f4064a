"""Evaluators: create (`evaluatorsV2` and the legacy `evaluators`) with inline code or an uploaded .py / tar.gz,
build check, get, list, delete.

The build runs within the request (an import check in a separate process takes about a second), so the evaluator
comes back ACTIVE or BUILD_FAILED; `BUILDING` only means the code has not been uploaded yet.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from fastapi import APIRouter, Request

from rftlab.server import uploads
from rftlab.server.api_common import (
    AccountId,
    Ctx,
    JsonBody,
    ServerContext,
    get_resource,
    insert_resource,
    now,
    parse_body,
)
from rftlab.server.evaluator_build import (
    BuildError,
    check_entry,
    install_upload,
    resolve_entry,
    write_inline_files,
)
from rftlab.server.resource_routes import STATEFUL_ORDER_COLUMNS, add_list_get_delete, render
from rftlab.server.schemas import EvaluatorCreate, check_resource_id
from rftlab.server.store import Resource

KIND = "evaluators"
router = APIRouter(prefix="/v1/accounts/{account_id}")
AWAITING_UPLOAD = (
    "waiting for the code: call :getUploadEndpoint, PUT the .py or .tar.gz, then :validateUpload"
)


@router.post("/evaluatorsV2")
@router.post("/evaluators")
def create_evaluator(account_id: AccountId, ctx: Ctx, body: JsonBody = None) -> dict:
    request = parse_body(EvaluatorCreate, body)
    evaluator_id = check_resource_id(
        request.evaluator_id or f"evaluator-{uuid.uuid4().hex[:12]}", "evaluatorId"
    )
    spec = request.evaluator
    name = f"accounts/{account_id}/evaluators/{evaluator_id}"
    snippets = next(
        (c.code_snippets for c in spec.criteria if c.code_snippets and c.code_snippets.file_contents), None
    )
    resource = Resource(
        account_id=account_id,
        kind=KIND,
        resource_id=evaluator_id,
        display_name=spec.display_name or evaluator_id,
        state="BUILDING",
        body={
            **spec.model_dump(by_alias=True, exclude_none=True),
            "name": name,
            "displayName": spec.display_name or evaluator_id,
            "state": "BUILDING",
            "status": {"code": "OK", "message": AWAITING_UPLOAD},
            "createdBy": account_id,
        },
    )
    insert_resource(ctx, resource)
    if snippets is None:
        return render(resource)
    code_dir = ctx.layout.evaluator_code(account_id, evaluator_id)
    try:
        write_inline_files(code_dir, snippets.file_contents)
    except BuildError as error:
        return _record_build(ctx, account_id, evaluator_id, error=str(error))
    return _build(
        ctx, account_id, evaluator_id, code_dir, snippets.entry_file, snippets.entry_func, spec.entry_point
    )


add_list_get_delete(
    router,
    KIND,
    "evaluator",
    STATEFUL_ORDER_COLUMNS,
    lambda layout, account_id, evaluator_id: layout.evaluator_code(account_id, evaluator_id).parent,
)


@router.post("/evaluators/{evaluator_id}:getUploadEndpoint")
def evaluator_upload_endpoint(
    evaluator_id: str,
    request: Request,
    account_id: AccountId,
    ctx: Ctx,
    body: JsonBody = None,
) -> dict:
    return uploads.upload_endpoint(ctx, str(request.base_url), account_id, KIND, evaluator_id, body)


@router.post("/evaluators/{evaluator_id}:validateUpload")
def validate_evaluator_upload(evaluator_id: str, account_id: AccountId, ctx: Ctx) -> dict:
    with ctx.store.session() as session:
        entry_point = get_resource(session, account_id, KIND, evaluator_id).body.get("entryPoint")
    staged, filename = uploads.take_upload(ctx, account_id, KIND, evaluator_id)
    code_dir = ctx.layout.evaluator_code(account_id, evaluator_id)
    try:
        install_upload(code_dir, staged, filename)
    except BuildError as error:
        return _record_build(ctx, account_id, evaluator_id, error=str(error))
    finally:
        staged.unlink(missing_ok=True)
    return _build(ctx, account_id, evaluator_id, code_dir, None, None, entry_point)


def _build(
    ctx: ServerContext,
    account_id: str,
    evaluator_id: str,
    code_dir: Path,
    entry_file: str | None,
    entry_func: str | None,
    entry_point: str | None,
) -> dict:
    try:
        entry = resolve_entry(code_dir, entry_file, entry_func, entry_point)
        check_entry(code_dir, entry)
    except BuildError as error:
        return _record_build(ctx, account_id, evaluator_id, error=str(error))
    return _record_build(ctx, account_id, evaluator_id, entry_point=f"{entry.entry_file}::{entry.entry_func}")


def _record_build(
    ctx: ServerContext, account_id: str, evaluator_id: str, *, error: str | None = None, entry_point: str = ""
) -> dict:
    with ctx.store.session() as session:
        resource = get_resource(session, account_id, KIND, evaluator_id)
        resource.state = "BUILD_FAILED" if error else "ACTIVE"
        resource.update_time = now()
        body = {**resource.body, "state": resource.state}
        if error:
            body["status"] = {"code": "INVALID_ARGUMENT", "message": error}
        else:
            body["status"] = {"code": "OK", "message": ""}
            body["entryPoint"] = entry_point
        resource.body = body
        return render(resource)
