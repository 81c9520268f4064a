"""The dashboard's pages at Fireworks' paths, its login, and its static files.

    /dashboard                                   jobs: state, progress, eval reward before and after
    /dashboard/fine-tuning/reinforcement/<job>   a job: live curves, settings, state history, rollout browser
    /dashboard/evaluators/<id>, /datasets/<id>   an evaluator or dataset: state, build log, rows
    /dashboard/sweeps/<label>                    jobs sharing a sweep label, side by side
    /dashboard/login, /dashboard/logout          API key -> session cookie

Each page is a small HTML shell naming what it shows; `static/dashboard.js` fills it from the REST routes the
launcher uses (`/v1/accounts/...`), which accept the session cookie for reads. A page of another account's job,
dataset or evaluator is a 404, as the REST route is. The Content-Security-Policy keeps every request on this server.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from sqlalchemy import select

from rftlab.server.accounts import account_for_key
from rftlab.server.api_common import Ctx, key_owner
from rftlab.server.dashboard.sessions import SESSION_COOKIE, SESSION_TTL_S, close_session, open_session
from rftlab.server.errors import ApiError, not_found
from rftlab.server.store import Job, find_resource

STATIC_DIR = Path(__file__).parent / "static"
STATIC_FILES = {path.name: path for path in STATIC_DIR.iterdir() if path.is_file()}
CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".txt": "text/plain"}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "style-src 'self' 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
DATASET_PREVIEW_ROWS = 50
PREVIEW_LINE_CHARS = 20_000

router = APIRouter(prefix="/dashboard", include_in_schema=False)


def _shell(title: str, account_id: str, page: str, status_code: int = 200, **data: str) -> HTMLResponse:
    attributes = " ".join(f'data-{name}="{html.escape(value)}"' for name, value in data.items())
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)} · rftlab</title><link rel="icon" href="data:,">
<link rel="stylesheet" href="/dashboard/static/uPlot.min.css"><link rel="stylesheet" href="/dashboard/static/dashboard.css">
<script src="/dashboard/static/uPlot.iife.min.js" defer></script><script src="/dashboard/static/dashboard.js" defer></script>
</head><body data-page="{page}" data-account="{html.escape(account_id)}" {attributes}>
<header><a class="brand" href="/dashboard">rftlab</a> <span class="where">{html.escape(title)}</span>
<form method="post" action="/dashboard/logout"><span>account {html.escape(account_id)}</span>
<button type="submit">log out</button></form></header>
<main id="main"><p class="muted">loading…</p></main></body></html>"""
    return HTMLResponse(body, status_code=status_code, headers=SECURITY_HEADERS)


def _viewer(request: Request, ctx: Ctx) -> str | None:
    """The account of the session cookie (or bearer key) of this request, if any."""
    try:
        return key_owner(request, ctx)
    except ApiError:
        return None


def _to_login(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/dashboard/login?next={quote(target)}", status_code=303)


def _not_found(account_id: str, what: str) -> HTMLResponse:
    return _shell("not found", account_id, "missing", status_code=404, missing=what)


def _safe_next(target: str | None) -> str:
    """Only a dashboard path: a login never redirects elsewhere."""
    if target and target.startswith("/dashboard") and not target.startswith("/dashboard/login"):
        return target
    return "/dashboard"


@router.get("/login")
def login_form(next: str | None = None, failed: bool = False) -> HTMLResponse:
    message = '<p class="error">That API key opens no account here.</p>' if failed else ""
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>log in · rftlab</title><link rel="icon" href="data:,">
<link rel="stylesheet" href="/dashboard/static/dashboard.css"></head>
<body data-page="login"><main class="login"><h1>rftlab</h1>{message}
<form method="post" action="/dashboard/login">
<label>API key <input type="password" name="api_key" id="api_key" autocomplete="current-password" required></label>
<input type="hidden" name="next" value="{html.escape(_safe_next(next))}">
<button type="submit" id="login">log in</button></form>
<p class="muted">The key of account <code>local</code> is in ~/.fireworks/profiles/rftlab-local/auth.ini;
<code>rftlab serve --add-account ID</code> prints a key for another account.</p></main></body></html>"""
    return HTMLResponse(body, status_code=401 if failed else 200, headers=SECURITY_HEADERS)


@router.post("/login")
def login(
    ctx: Ctx, api_key: Annotated[str, Form()] = "", next: Annotated[str, Form()] = "/dashboard"
) -> Response:
    account_id = account_for_key(ctx.store, api_key.strip()) if api_key.strip() else None
    if account_id is None:
        return login_form(next=next, failed=True)
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        open_session(ctx.store, account_id),
        max_age=SESSION_TTL_S,
        path="/",
        httponly=True,
        samesite="strict",
    )
    return response


@router.post("/logout")
def logout(request: Request, ctx: Ctx) -> RedirectResponse:
    close_session(ctx.store, request.cookies.get(SESSION_COOKIE))
    response = RedirectResponse("/dashboard/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response


@router.get("/static/{name}")
def static_file(name: str) -> FileResponse:
    path = STATIC_FILES.get(name)
    if path is None:
        raise not_found(f"/dashboard/static/{name}")
    media_type = CONTENT_TYPES.get(path.suffix, "application/octet-stream")
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": "max-age=3600"})


@router.get("")
def jobs_page(request: Request, ctx: Ctx) -> Response:
    account_id = _viewer(request, ctx)
    if account_id is None:
        return _to_login(request)
    return _shell("jobs", account_id, "jobs")


@router.get("/fine-tuning/reinforcement/{job_id}")
def job_page(job_id: str, request: Request, ctx: Ctx) -> Response:
    account_id = _viewer(request, ctx)
    if account_id is None:
        return _to_login(request)
    with ctx.store.reading() as session:
        found = session.scalar(select(Job.seq).where(Job.account_id == account_id, Job.job_id == job_id))
    if found is None:
        return _not_found(account_id, f"job {job_id}")
    return _shell(f"job {job_id}", account_id, "job", id=job_id)


def _resource_page(kind: str, singular: str, resource_id: str, request: Request, ctx: Ctx) -> Response:
    account_id = _viewer(request, ctx)
    if account_id is None:
        return _to_login(request)
    with ctx.store.reading() as session:
        found = find_resource(session, account_id, kind, resource_id) is not None
    if not found:
        return _not_found(account_id, f"{singular} {resource_id}")
    return _shell(f"{singular} {resource_id}", account_id, singular, id=resource_id)


@router.get("/datasets/{dataset_id}")
def dataset_page(dataset_id: str, request: Request, ctx: Ctx) -> Response:
    return _resource_page("datasets", "dataset", dataset_id, request, ctx)


@router.get("/evaluators/{evaluator_id}")
def evaluator_page(evaluator_id: str, request: Request, ctx: Ctx) -> Response:
    return _resource_page("evaluators", "evaluator", evaluator_id, request, ctx)


@router.get("/sweeps/{label}")
def sweep_page(label: str, request: Request, ctx: Ctx) -> Response:
    account_id = _viewer(request, ctx)
    if account_id is None:
        return _to_login(request)
    return _shell(f"sweep {label}", account_id, "sweep", id=label)


@router.get("/api/datasets/{dataset_id}/rows")
def dataset_rows(dataset_id: str, request: Request, ctx: Ctx) -> dict:
    """The first rows of a dataset (the REST API has no route that returns rows)."""
    account_id = key_owner(request, ctx)
    with ctx.store.reading() as session:
        if find_resource(session, account_id, "datasets", dataset_id) is None:
            raise not_found(f"accounts/{account_id}/datasets/{dataset_id}")
    path = ctx.layout.dataset_file(account_id, dataset_id)
    if not path.is_file():  # a server started on another machine than the one that took the upload
        ctx.storage.fetch_file(path, missing_ok=True)
    rows = []
    if path.is_file():
        with path.open(encoding="utf-8", errors="replace") as lines:
            for line in lines:
                if len(rows) == DATASET_PREVIEW_ROWS:
                    break
                if len(line) > PREVIEW_LINE_CHARS:
                    rows.append({"long line, cut": line[:PREVIEW_LINE_CHARS]})
                elif line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError:
                        rows.append({"unreadable line": line[:500]})
    return {"rows": rows, "previewLimit": DATASET_PREVIEW_ROWS}
