"""Evaluators: create (`evaluatorsV2` and the legacy `evaluators`) with inline code or an uploaded .py / tar.gz,
the build, get, list, delete, and the build log.

A build (unpack, install requirements.txt into the evaluator's environment, import the entry) runs off the request
path on one of `MAX_PARALLEL_BUILDS` build threads, the others queued in order: the evaluator is BUILDING (its
status says "queued" until a thread takes it) until it ends ACTIVE or BUILD_FAILED with the error. The request that
starts a build waits up to `QUICK_BUILD_WAIT_S` for it, so a plain evaluator file (an import check of about a
second) comes back ACTIVE at once; one whose requirements must be installed answers BUILDING and is polled, as on
Fireworks. Each build writes a log (`:getBuildLogEndpoint` hands out its URL).
"""

from __future__ import annotations

import json
import threading
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path

from cryptography.fernet import InvalidToken
from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse
from sqlalchemy import select

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
from rftlab.server.build_queue import BuildQueue
from rftlab.server.errors import ApiError, failed_precondition, not_found
from rftlab.server.evaluator_build import (
    BuildError,
    check_entry,
    install_upload,
    resolve_entry,
    write_inline_files,
)
from rftlab.server.evaluator_env import InstallSettings, ensure_environment, read_requirements
from rftlab.server.resource_routes import STATEFUL_ORDER_COLUMNS, add_list_get_delete, render
from rftlab.server.schemas import EvaluatorCreate, check_resource_id
from rftlab.server.server_key import server_fernet
from rftlab.server.store import Resource

KIND = "evaluators"
router = APIRouter()
account_router = APIRouter(prefix="/v1/accounts/{account_id}")
AWAITING_UPLOAD = (
    "waiting for the code: call :getUploadEndpoint, PUT the .py or .tar.gz, then :validateUpload"
)
BUILDING_MESSAGE = "building: installing requirements.txt and importing the entry point"
MAX_PARALLEL_BUILDS = 2
QUEUED_MESSAGE = f"queued: waiting for a build slot (at most {MAX_PARALLEL_BUILDS} evaluators build at once, in upload order)"
QUICK_BUILD_WAIT_S = 10.0
BUILD_LOG_URL_TTL_S = 3600

_builds = BuildQueue(MAX_PARALLEL_BUILDS)
_in_flight: set[tuple[str, str]] = set()
_in_flight_lock = threading.Lock()


@account_router.post("/evaluatorsV2")
@account_router.post("/evaluators")
def create_evaluator(account_id: AccountId, ctx: Ctx, body: JsonBody = None) -> dict:
    request = parse_body(EvaluatorCreate, body)
    evaluator_id = check_resource_id(
        request.evaluator_id or f"evaluator-{uuid.uuid4().hex[:12]}", "evaluatorId"
    )
    spec = request.evaluator
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
            "name": f"accounts/{account_id}/evaluators/{evaluator_id}",
            "displayName": spec.display_name or evaluator_id,
            "state": "BUILDING",
            "status": {"code": "OK", "message": AWAITING_UPLOAD},
            "createdBy": account_id,
        },
    )
    insert_resource(ctx, resource)
    if snippets is None:
        return render(resource)

    def unpack(code_dir: Path) -> None:
        write_inline_files(code_dir, snippets.file_contents)

    return _start_build(ctx, account_id, evaluator_id, unpack, snippets.entry_file, snippets.entry_func)


# Before the generic GET of an evaluator, which would take `<id>:getBuildLogEndpoint` for an id.
@account_router.get("/evaluators/{evaluator_id}:getBuildLogEndpoint")
def build_log_endpoint(evaluator_id: str, request: Request, account_id: AccountId, ctx: Ctx) -> dict:
    with ctx.store.reading() as session:
        get_resource(session, account_id, KIND, evaluator_id)
    token = server_fernet(ctx.layout.root).encrypt(json.dumps([account_id, evaluator_id]).encode()).decode()
    return {"buildLogSignedUri": f"{str(request.base_url).rstrip('/')}/v1/evaluatorBuildLogs/{token}"}


add_list_get_delete(
    account_router,
    KIND,
    "evaluator",
    STATEFUL_ORDER_COLUMNS,
    lambda layout, account_id, evaluator_id: layout.evaluator_code(account_id, evaluator_id).parent,
)


@account_router.post("/evaluators/{evaluator_id}:getUploadEndpoint")
def evaluator_upload_endpoint(
    evaluator_id: str,
    request: Request,
    account_id: AccountId,
    ctx: Ctx,
    body: JsonBody = None,
) -> dict:
    return uploads.upload_endpoint(ctx, str(request.base_url), account_id, KIND, evaluator_id, body)


@account_router.post("/evaluators/{evaluator_id}:validateUpload")
def validate_evaluator_upload(evaluator_id: str, account_id: AccountId, ctx: Ctx) -> dict:
    with ctx.store.reading() as session:
        get_resource(session, account_id, KIND, evaluator_id)
    if (account_id, evaluator_id) in _in_flight:
        raise failed_precondition(
            f"accounts/{account_id}/evaluators/{evaluator_id} is still building; wait for ACTIVE or BUILD_FAILED"
        )
    staged, filename = uploads.take_upload(ctx, account_id, KIND, evaluator_id)

    def unpack(code_dir: Path) -> None:
        try:
            install_upload(code_dir, staged, filename)
        finally:
            staged.unlink(missing_ok=True)

    return _start_build(ctx, account_id, evaluator_id, unpack, None, None)


@router.get("/v1/evaluatorBuildLogs/{token}", response_class=PlainTextResponse)
def build_log(token: str, ctx: Ctx) -> str:
    """The build log behind a `:getBuildLogEndpoint` URL; like a signed URL, the token is the only credential."""
    try:
        account_id, evaluator_id = json.loads(
            server_fernet(ctx.layout.root).decrypt(token.encode(), ttl=BUILD_LOG_URL_TTL_S)
        )
    except InvalidToken:
        raise not_found(
            "build log URL (it may have expired; ask :getBuildLogEndpoint for a new one)"
        ) from None
    path = build_log_path(ctx, account_id, evaluator_id)
    if not path.is_file():
        raise not_found(f"build log of accounts/{account_id}/evaluators/{evaluator_id}")
    return path.read_text(errors="replace")


def build_log_path(ctx: ServerContext, account_id: str, evaluator_id: str) -> Path:
    return ctx.layout.evaluator_code(account_id, evaluator_id).parent / "build.log"


def fail_interrupted_builds(ctx: ServerContext) -> None:
    """At server start: a build the previous server did not finish will never finish; say so."""
    with ctx.store.session() as session:
        building = session.scalars(
            select(Resource).where(Resource.kind == KIND, Resource.state == "BUILDING")
        )
        for resource in building:
            if resource.body.get("status", {}).get("message") in (QUEUED_MESSAGE, BUILDING_MESSAGE):
                _set_state(resource, "the server restarted during the build; upload the evaluator again")


def _start_build(
    ctx: ServerContext,
    account_id: str,
    evaluator_id: str,
    unpack: Callable[[Path], None],
    entry_file: str | None,
    entry_func: str | None,
) -> dict:
    key = (account_id, evaluator_id)
    with _in_flight_lock:
        _in_flight.add(key)
    with ctx.store.session() as session:
        _set_state(get_resource(session, account_id, KIND, evaluator_id), None, state="BUILDING", queued=True)

    def run() -> None:
        try:
            with ctx.store.session() as session:
                _set_state(get_resource(session, account_id, KIND, evaluator_id), None, state="BUILDING")
            _build(ctx, account_id, evaluator_id, unpack, entry_file, entry_func)
        except ApiError:  # deleted while it was queued
            pass
        finally:
            with _in_flight_lock:
                _in_flight.discard(key)

    _builds.submit(run).wait(QUICK_BUILD_WAIT_S)
    with ctx.store.reading() as session:
        return render(get_resource(session, account_id, KIND, evaluator_id))


def _build(
    ctx: ServerContext,
    account_id: str,
    evaluator_id: str,
    unpack: Callable[[Path], None],
    entry_file: str | None,
    entry_func: str | None,
) -> None:
    code_dir = ctx.layout.evaluator_code(account_id, evaluator_id)
    code_dir.parent.mkdir(parents=True, exist_ok=True)
    with build_log_path(ctx, account_id, evaluator_id).open("w") as log_file:

        def log(line: str) -> None:
            log_file.write(line.rstrip("\n") + "\n")
            log_file.flush()

        error: str | None = None
        entry_point = ""
        try:
            with ctx.store.reading() as session:
                body = get_resource(session, account_id, KIND, evaluator_id).body
            log("unpacking the evaluator's code")
            unpack(code_dir)
            if body.get("requirements") and not (code_dir / "requirements.txt").exists():
                (code_dir / "requirements.txt").write_text(body["requirements"])
            requirements = read_requirements(code_dir)
            python = ensure_environment(ctx.layout.root, requirements, log, install_settings(ctx))
            entry = resolve_entry(code_dir, entry_file, entry_func, body.get("entryPoint"))
            log(f"importing {entry.entry_file} and looking up {entry.entry_func}")
            check_entry(code_dir, entry, python=python)
            if ctx.storage.remote:
                log(f"storing the code at {ctx.storage.location(code_dir)}")
                ctx.storage.put_dir(code_dir)
            entry_point = f"{entry.entry_file}::{entry.entry_func}"
            log(f"ACTIVE: entry point {entry_point}")
        except BuildError as failure:
            error = str(failure)
        except Exception:  # a bug in the build must still end the build, with what happened in the log
            log(traceback.format_exc())
            error = "the build failed on the server; see the build log (:getBuildLogEndpoint)"
        if error:
            log(f"BUILD_FAILED: {error}")
        try:
            with ctx.store.session() as session:
                resource = get_resource(session, account_id, KIND, evaluator_id)
                _set_state(resource, error, entry_point=entry_point)
        except ApiError:  # deleted while it was building
            pass


def install_settings(ctx: ServerContext) -> InstallSettings:
    return InstallSettings.within(ctx.limits)


def _set_state(
    resource: Resource, error: str | None, *, state: str = "", entry_point: str = "", queued: bool = False
) -> None:
    resource.state = state or ("BUILD_FAILED" if error else "ACTIVE")
    resource.update_time = now()
    body = {**resource.body, "state": resource.state}
    if resource.state == "BUILDING":
        body["status"] = {"code": "OK", "message": QUEUED_MESSAGE if queued else BUILDING_MESSAGE}
    elif error:
        body["status"] = {"code": "INVALID_ARGUMENT", "message": error}
    else:
        body["status"] = {"code": "OK", "message": ""}
        body["entryPoint"] = entry_point
    resource.body = body


router.include_router(account_router)
