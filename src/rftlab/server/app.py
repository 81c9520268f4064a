"""The FastAPI application: Fireworks' REST paths under /v1/accounts/{account_id}/, GET /verifyApiKey, and the
unauthenticated GET /healthz and GET /openapi.json (the schema of every route)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from rftlab.server import (
    api_datasets,
    api_evaluators,
    api_jobs,
    api_mcp_servers,
    api_models,
    api_rollouts,
    api_secrets,
    unimplemented,
    uploads,
)
from rftlab.server.api_common import Ctx, ServerContext, key_owner
from rftlab.server.dashboard import routes as dashboard_routes
from rftlab.server.errors import ApiError, describe_validation_errors, error_response
from rftlab.server.guard import Guard
from rftlab.server.layout import StateLayout
from rftlab.server.limits import ServerLimits
from rftlab.server.scheduler import Scheduler
from rftlab.server.store import Store

HTTP_STATUS_NAMES = {401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 405: "UNIMPLEMENTED"}


def create_app(
    store: Store, layout: StateLayout, max_running_jobs: int = 1, limits: ServerLimits | None = None
) -> FastAPI:
    limits = limits or ServerLimits()
    scheduler = Scheduler(store, layout, max_running_jobs, limits)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        api_evaluators.fail_interrupted_builds(app.state.context)
        scheduler.start()
        try:
            yield
        finally:
            scheduler.stop()

    app = FastAPI(
        title="rftlab local backend",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.add_middleware(Guard, limits=limits)
    app.state.context = ServerContext(
        store=store, layout=layout, wake_scheduler=scheduler.wake, limits=limits, storage=scheduler.storage
    )

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/verifyApiKey")
    def verify_api_key(request: Request, ctx: Ctx) -> JSONResponse:
        """How eval-protocol learns the account of a key: the `x-fireworks-account-id` response header."""
        account_id = key_owner(request, ctx)
        return JSONResponse({"accountId": account_id}, headers={"x-fireworks-account-id": account_id})

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, error: ApiError):
        return error.response()

    @app.exception_handler(RequestValidationError)
    async def _request_invalid(_request: Request, error: RequestValidationError):
        return error_response(400, "INVALID_ARGUMENT", describe_validation_errors(list(error.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException):
        status = HTTP_STATUS_NAMES.get(
            error.status_code, "INVALID_ARGUMENT" if error.status_code < 500 else "INTERNAL"
        )
        message = f"{request.method} {request.url.path}: {error.detail}"
        return error_response(error.status_code, status, message)

    for module in (uploads, api_datasets, api_evaluators, api_secrets, api_mcp_servers, api_jobs, api_models):
        app.include_router(module.router)
    app.include_router(api_rollouts.router)
    app.include_router(dashboard_routes.router)
    app.include_router(unimplemented.router)  # last: it answers 501 for every /v1 route not matched above
    return app
