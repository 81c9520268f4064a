"""Datasets: create, upload (multipart, or the upload-URL flow), validate, get, list, delete."""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, Request, UploadFile

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
from rftlab.server.dataset_check import check_dataset_file
from rftlab.server.errors import ApiError, failed_precondition, invalid
from rftlab.server.limits import flag
from rftlab.server.resource_routes import STATEFUL_ORDER_COLUMNS, add_list_get_delete, render
from rftlab.server.schemas import DatasetCreate, check_resource_id
from rftlab.server.store import Resource

KIND = "datasets"
router = APIRouter(prefix="/v1/accounts/{account_id}")


@router.post("/datasets")
def create_dataset(account_id: AccountId, ctx: Ctx, body: JsonBody = None) -> dict:
    request = parse_body(DatasetCreate, body)
    dataset_id = check_resource_id(request.dataset_id, "datasetId")
    if request.source_dataset_id or request.filter:
        raise invalid("sourceDatasetId/filter: derived datasets are not supported by the local backend")
    if request.dataset.external_url:
        raise invalid(
            "dataset.externalUrl: the local backend cannot fetch external data; upload the file instead"
        )
    name = f"accounts/{account_id}/datasets/{dataset_id}"
    resource = Resource(
        account_id=account_id,
        kind=KIND,
        resource_id=dataset_id,
        display_name=request.dataset.display_name or dataset_id,
        state="UPLOADING",
        body={
            "name": name,
            "displayName": request.dataset.display_name or dataset_id,
            "format": request.dataset.format,
            "userUploaded": {},
            "state": "UPLOADING",
            "exampleCount": "0",
            "status": {"code": "OK", "message": ""},
            "createdBy": account_id,
        },
    )
    insert_resource(ctx, resource)
    return render(resource)


add_list_get_delete(
    router,
    KIND,
    "dataset",
    STATEFUL_ORDER_COLUMNS,
    lambda layout, account_id, dataset_id: layout.dataset_file(account_id, dataset_id).parent,
)


@router.post("/datasets/{dataset_id}:upload")
def upload_dataset(
    dataset_id: str,
    account_id: AccountId,
    ctx: Ctx,
    file: Annotated[UploadFile, File()],
) -> dict:
    _expect_uploading(ctx, account_id, dataset_id)
    filename = uploads.check_file_name(file.filename or "data.jsonl", "file")
    staged = _stage(ctx, file)
    size = staged.stat().st_size
    _install(ctx, account_id, dataset_id, staged, filename)
    return {
        "id": dataset_id,
        "object": "file",
        "bytes": size,
        "filename": filename,
        "created_at": int(now()),
    }


def _stage(ctx: ServerContext, file: UploadFile) -> Path:
    """The multipart file copied into the uploads folder, at most `--max-upload-mb` of it (the request's own bound
    stops a larger one first; this one holds whatever the multipart framing around it)."""
    ctx.layout.uploads_dir.mkdir(parents=True, exist_ok=True)
    staged = ctx.layout.upload_file(f"{secrets.token_urlsafe(16)}.multipart")
    limit = ctx.limits.upload_bytes
    copied = 0
    with staged.open("wb") as out:
        while chunk := file.file.read(1 << 20):
            copied += len(chunk)
            if copied > limit:
                out.close()
                staged.unlink(missing_ok=True)
                raise ApiError(
                    413,
                    "INVALID_ARGUMENT",
                    f"file: larger than {limit:,} bytes, this server's limit ({flag('max_upload_mb')}); "
                    "upload it through :getUploadEndpoint",
                )
            out.write(chunk)
    return staged


@router.post("/datasets/{dataset_id}:getUploadEndpoint")
def dataset_upload_endpoint(
    dataset_id: str,
    request: Request,
    account_id: AccountId,
    ctx: Ctx,
    body: JsonBody = None,
) -> dict:
    return uploads.upload_endpoint(
        ctx, str(request.base_url), account_id, KIND, dataset_id, body, check=_refuse_unless_uploading
    )


@router.post("/datasets/{dataset_id}:validateUpload")
def validate_dataset_upload(dataset_id: str, account_id: AccountId, ctx: Ctx) -> dict:
    _expect_uploading(ctx, account_id, dataset_id)
    staged, filename = uploads.take_upload(ctx, account_id, KIND, dataset_id)
    return _install(ctx, account_id, dataset_id, staged, filename)


def _expect_uploading(ctx: ServerContext, account_id: str, dataset_id: str) -> None:
    with ctx.store.session() as session:
        _refuse_unless_uploading(get_resource(session, account_id, KIND, dataset_id))


def _refuse_unless_uploading(dataset: Resource) -> None:
    if dataset.state != "UPLOADING":
        raise failed_precondition(
            f"{dataset.body['name']} is already {dataset.state}; datasets are immutable, create a new one"
        )


def _install(ctx: ServerContext, account_id: str, dataset_id: str, staged: Path, filename: str) -> dict:
    """Validate the staged file; keep it as the dataset's rows (state READY), or refuse it naming bad lines."""
    try:
        report = check_dataset_file(staged, ctx.limits)
        if report.problem_count:
            message = f"{filename}: {report.summary()}"
            _set_status(ctx, account_id, dataset_id, "INVALID_ARGUMENT", message)
            raise invalid(message)
        if report.example_count == 0:
            raise invalid(f"{filename}: no rows; each line must be a JSON object with 'messages'")
        target = ctx.layout.dataset_file(account_id, dataset_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(staged, target)
        ctx.storage.put_file(target)
    finally:
        staged.unlink(missing_ok=True)
    with ctx.store.session() as session:
        resource = get_resource(session, account_id, KIND, dataset_id)
        resource.state = "READY"
        resource.update_time = now()
        resource.body = {
            **resource.body,
            "state": "READY",
            "exampleCount": str(report.example_count),
            "status": {"code": "OK", "message": ""},
        }
        return render(resource)


def _set_status(ctx: ServerContext, account_id: str, dataset_id: str, code: str, message: str) -> None:
    with ctx.store.session() as session:
        resource = get_resource(session, account_id, KIND, dataset_id)
        resource.update_time = now()
        resource.body = {**resource.body, "status": {"code": code, "message": message}}
