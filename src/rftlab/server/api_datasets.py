"""Datasets: create, upload (multipart, or the upload-URL flow), validate, get, list, delete."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Request, UploadFile
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from rftlab.server import uploads
from rftlab.server.api_common import (
    AccountId,
    Ctx,
    JsonBody,
    ServerContext,
    fetch_page,
    get_resource,
    now,
    page_request,
    parse_body,
    rfc3339,
)
from rftlab.server.dataset_check import check_dataset_file
from rftlab.server.errors import already_exists, failed_precondition, invalid
from rftlab.server.job_refs import refuse_if_used_by_active_job
from rftlab.server.schemas import DatasetCreate, UploadEndpointRequest, check_resource_id
from rftlab.server.store import Resource

KIND = "datasets"
router = APIRouter(prefix="/v1/accounts/{account_id}")
ORDER_COLUMNS = {
    "name": Resource.resource_id,
    "createTime": Resource.create_time,
    "updateTime": Resource.update_time,
    "displayName": Resource.display_name,
    "state": Resource.state,
}


def render(resource: Resource) -> dict[str, Any]:
    return {
        **resource.body,
        "createTime": rfc3339(resource.create_time),
        "updateTime": rfc3339(resource.update_time),
    }


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
    try:
        with ctx.store.session() as session:
            session.add(resource)
    except IntegrityError:
        raise already_exists(name) from None
    return render(resource)


@router.get("/datasets")
def list_datasets(
    account_id: AccountId,
    ctx: Ctx,
    pageSize: int | None = None,
    pageToken: str | None = None,
    orderBy: str | None = None,
) -> dict:
    page = page_request(pageSize, pageToken, orderBy, set(ORDER_COLUMNS))
    with ctx.store.reading() as session:
        query = select(Resource).where(Resource.account_id == account_id, Resource.kind == KIND)
        rows, next_token = fetch_page(session, query, page, ORDER_COLUMNS, Resource.seq)
        return {"datasets": [render(r) for r in rows], "nextPageToken": next_token}


@router.get("/datasets/{dataset_id}")
def get_dataset(dataset_id: str, account_id: AccountId, ctx: Ctx) -> dict:
    with ctx.store.reading() as session:
        return render(get_resource(session, account_id, KIND, dataset_id))


@router.delete("/datasets/{dataset_id}")
def delete_dataset(dataset_id: str, account_id: AccountId, ctx: Ctx) -> dict:
    with ctx.store.session() as session:
        resource = get_resource(session, account_id, KIND, dataset_id)
        refuse_if_used_by_active_job(session, account_id, resource.body["name"])
        session.delete(resource)
    shutil.rmtree(ctx.layout.dataset_file(account_id, dataset_id).parent, ignore_errors=True)
    return {}


@router.post("/datasets/{dataset_id}:upload")
def upload_dataset(
    dataset_id: str,
    account_id: AccountId,
    ctx: Ctx,
    file: Annotated[UploadFile, File()],
) -> dict:
    _expect_uploading(ctx, account_id, dataset_id)
    with tempfile.NamedTemporaryFile(dir=ctx.layout.root, delete=False, suffix=".upload") as staged:
        shutil.copyfileobj(file.file, staged)
    size = Path(staged.name).stat().st_size
    _install(ctx, account_id, dataset_id, Path(staged.name), file.filename or "data.jsonl")
    return {
        "id": dataset_id,
        "object": "file",
        "bytes": size,
        "filename": file.filename,
        "created_at": int(now()),
    }


@router.post("/datasets/{dataset_id}:getUploadEndpoint")
def dataset_upload_endpoint(
    dataset_id: str,
    request: Request,
    account_id: AccountId,
    ctx: Ctx,
    body: JsonBody = None,
) -> dict:
    wanted = parse_body(UploadEndpointRequest, body)
    _expect_uploading(ctx, account_id, dataset_id)
    (filename, size) = next(iter(wanted.filename_to_size.items()))
    with ctx.store.session() as session:
        url = uploads.open_slot(session, account_id, KIND, dataset_id, filename, size, str(request.base_url))
    return {"filenameToSignedUrls": {filename: url}}


@router.post("/datasets/{dataset_id}:validateUpload")
def validate_dataset_upload(dataset_id: str, account_id: AccountId, ctx: Ctx) -> dict:
    _expect_uploading(ctx, account_id, dataset_id)
    staged, filename = uploads.take_upload(ctx, account_id, KIND, dataset_id)
    return _install(ctx, account_id, dataset_id, staged, filename)


def _expect_uploading(ctx: ServerContext, account_id: str, dataset_id: str) -> None:
    with ctx.store.session() as session:
        resource = get_resource(session, account_id, KIND, dataset_id)
        if resource.state != "UPLOADING":
            raise failed_precondition(
                f"{resource.body['name']} is already {resource.state}; datasets are immutable, create a new one"
            )


def _install(ctx: ServerContext, account_id: str, dataset_id: str, staged: Path, filename: str) -> dict:
    """Validate the staged file; keep it as the dataset's rows (state READY), or refuse it naming bad lines."""
    try:
        report = check_dataset_file(staged)
        if report.problem_count:
            message = f"{filename}: {report.summary()}"
            _set_status(ctx, account_id, dataset_id, "INVALID_ARGUMENT", message)
            raise invalid(message)
        if report.example_count == 0:
            raise invalid(f"{filename}: no rows; each line must be a JSON object with 'messages'")
        target = ctx.layout.dataset_file(account_id, dataset_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(staged, target)
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
