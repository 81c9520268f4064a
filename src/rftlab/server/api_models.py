"""Models: the LoRA adapters jobs write (kind HF_PEFT_ADDON): list, get, delete."""

from __future__ import annotations

import shutil
from typing import Any

from fastapi import APIRouter
from sqlalchemy import select

from rftlab.server.api_common import (
    AccountId,
    Ctx,
    fetch_page,
    get_resource,
    page_request,
    rfc3339,
)
from rftlab.server.job_refs import refuse_if_used_by_active_job
from rftlab.server.store import Resource

KIND = "models"
router = APIRouter(prefix="/v1/accounts/{account_id}")
ORDER_COLUMNS = {
    "name": Resource.resource_id,
    "createTime": Resource.create_time,
    "updateTime": Resource.update_time,
    "displayName": Resource.display_name,
}


def render(resource: Resource) -> dict[str, Any]:
    return {
        **resource.body,
        "createTime": rfc3339(resource.create_time),
        "updateTime": rfc3339(resource.update_time),
    }


@router.get("/models")
def list_models(
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
        return {"models": [render(r) for r in rows], "nextPageToken": next_token}


@router.get("/models/{model_id}")
def get_model(model_id: str, account_id: AccountId, ctx: Ctx) -> dict:
    with ctx.store.reading() as session:
        return render(get_resource(session, account_id, KIND, model_id))


@router.delete("/models/{model_id}")
def delete_model(model_id: str, account_id: AccountId, ctx: Ctx) -> dict:
    with ctx.store.session() as session:
        resource = get_resource(session, account_id, KIND, model_id)
        refuse_if_used_by_active_job(session, account_id, resource.body["name"])
        session.delete(resource)
    shutil.rmtree(ctx.layout.model_dir(account_id, model_id), ignore_errors=True)
    return {}
