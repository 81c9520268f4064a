"""The list, get and delete routes that datasets, evaluators and models share, how such a resource renders, and
which unfinished jobs still need one."""

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from sqlalchemy import select
from sqlalchemy.orm import Session

from rftlab.fireworks.contract import TERMINAL_STATES
from rftlab.server.api_common import AccountId, Ctx, fetch_page, get_resource, page_request, rfc3339
from rftlab.server.errors import failed_precondition, invalid
from rftlab.server.layout import StateLayout
from rftlab.server.store import Job, Resource
from rftlab.server.unimplemented import refuse_custom_method

ORDER_COLUMNS = {
    "name": Resource.resource_id,
    "createTime": Resource.create_time,
    "updateTime": Resource.update_time,
    "displayName": Resource.display_name,
}
STATEFUL_ORDER_COLUMNS = {**ORDER_COLUMNS, "state": Resource.state}


def render(resource: Resource) -> dict[str, Any]:
    return {
        **resource.body,
        "createTime": rfc3339(resource.create_time),
        "updateTime": rfc3339(resource.update_time),
    }


def referenced_names(spec: dict) -> set[str]:
    training = spec.get("trainingConfig", {})
    return {
        name
        for name in (
            spec.get("dataset"),
            spec.get("evaluationDataset"),
            spec.get("evaluator"),
            spec.get("mcpServer"),
            training.get("warmStartFrom"),
        )
        if name
    }


def refuse_filter(filter: str | None) -> None:
    """Every list route answers an AIP-160 `filter` the same way: a clear 400, never a silently unfiltered page."""
    if filter:
        raise invalid("filter: not supported by the local backend; list without it and filter client-side")


def refuse_if_used_by_active_job(session: Session, account_id: str, name: str) -> None:
    unfinished = session.scalars(
        select(Job).where(Job.account_id == account_id, Job.state.not_in(TERMINAL_STATES))
    )
    users = [job.job_id for job in unfinished if name in referenced_names(job.spec)]
    if users:
        raise failed_precondition(
            f"{name} is used by unfinished job(s) {', '.join(users)}; cancel or delete them first"
        )


def add_list_get_delete(
    router: APIRouter,
    kind: str,
    singular: str,
    order_columns: dict[str, Any],
    files: Callable[[StateLayout, str, str], Path] | None,
    shown: Callable[[Resource], dict[str, Any]] = render,
) -> None:
    """`GET /<kind>`, `GET /<kind>/{<singular>_id}` and `DELETE /<kind>/{<singular>_id}` on `router`.

    `files(layout, account_id, resource_id)` is the folder a delete removes (None: the resource has none);
    `shown` renders a resource for a reply. A resource an unfinished job uses cannot be deleted.
    """
    item_path = f"/{kind}/{{{singular}_id}}"
    # The path parameter keeps its per-kind name (e.g. `dataset_id`) in the OpenAPI schema. No
    # `from __future__ import annotations` here: FastAPI must see this local alias as an object, not a string.
    ResourceId = Annotated[str, PathParam(alias=f"{singular}_id")]

    @router.get(f"/{kind}", name=f"list_{kind}")
    def list_resources(
        account_id: AccountId,
        ctx: Ctx,
        pageSize: int | None = None,
        pageToken: str | None = None,
        orderBy: str | None = None,
        filter: str | None = None,
    ) -> dict:
        refuse_filter(filter)
        page = page_request(pageSize, pageToken, orderBy, set(order_columns))
        with ctx.store.reading() as session:
            query = select(Resource).where(Resource.account_id == account_id, Resource.kind == kind)
            rows, next_token = fetch_page(session, query, page, order_columns, Resource.seq)
            return {kind: [shown(r) for r in rows], "nextPageToken": next_token}

    @router.get(item_path, name=f"get_{singular}")
    def get_one(resource_id: ResourceId, request: Request, account_id: AccountId, ctx: Ctx) -> dict:
        refuse_custom_method(resource_id, request)
        with ctx.store.reading() as session:
            return shown(get_resource(session, account_id, kind, resource_id))

    @router.delete(item_path, name=f"delete_{singular}")
    def delete_one(resource_id: ResourceId, request: Request, account_id: AccountId, ctx: Ctx) -> dict:
        refuse_custom_method(resource_id, request)
        with ctx.store.session() as session:
            resource = get_resource(session, account_id, kind, resource_id)
            refuse_if_used_by_active_job(session, account_id, resource.body["name"])
            session.delete(resource)
        if files is not None:
            shutil.rmtree(files(ctx.layout, account_id, resource_id), ignore_errors=True)
            ctx.storage.delete(files(ctx.layout, account_id, resource_id))
        return {}
