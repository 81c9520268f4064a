"""reinforcementFineTuningJobs: create, get, list, delete, `:cancel`, `:resume`, and two routes of rftlab's own
beside a job: its per-step metrics and its state history."""

from __future__ import annotations

import json
import shutil
import uuid
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from rftlab.fireworks.contract import (
    ACTIVE_STATES,
    CANCELLED,
    PENDING,
    RESUMABLE_STATES,
    TERMINAL_STATES,
)
from rftlab.server.api_common import (
    AccountId,
    Ctx,
    JsonBody,
    fetch_page,
    now,
    page_request,
    parse_body,
    rfc3339,
    short_id,
)
from rftlab.server.errors import (
    ApiError,
    already_exists,
    failed_precondition,
    invalid,
    not_found,
    resource_exhausted,
)
from rftlab.server.job_secrets import seal
from rftlab.server.limits import flag
from rftlab.server.resource_routes import refuse_filter
from rftlab.server.scheduler import kill_worker
from rftlab.server.schemas import JobRequest, check_resource_id
from rftlab.server.store import Job, JobMetric, find_resource, job_transitions
from rftlab.server.unimplemented import refuse_custom_method

router = APIRouter(prefix="/v1/accounts/{account_id}/reinforcementFineTuningJobs")
ORDER_COLUMNS = {
    "name": Job.job_id,
    "createTime": Job.create_time,
    "updateTime": Job.update_time,
    "displayName": Job.display_name,
    "state": Job.state,
}


def render(job: Job) -> dict[str, Any]:
    rendered = {
        **job.spec,
        "name": f"accounts/{job.account_id}/reinforcementFineTuningJobs/{job.job_id}",
        "state": job.state,
        "status": {"code": job.status_code, "message": job.status_message},
        "createTime": rfc3339(job.create_time),
        "updateTime": rfc3339(job.update_time),
        "createdBy": job.account_id,
        "jobProgress": job.progress or {},
    }
    if job.completed_time is not None:
        rendered["completedTime"] = rfc3339(job.completed_time)
    if job.output_metrics is not None:
        rendered["outputMetrics"] = json.dumps(job.output_metrics)
    return rendered


@router.post("")
def create_job(
    account_id: AccountId,
    ctx: Ctx,
    body: JsonBody = None,
    reinforcementFineTuningJobId: str | None = None,
) -> dict:
    job_id = check_resource_id(
        reinforcementFineTuningJobId or f"rftj-{uuid.uuid4().hex[:12]}", "reinforcementFineTuningJobId"
    )
    request = parse_body(JobRequest, body)
    spec = request.dump()
    secrets: dict[str, Any] = {}
    wandb = spec.get("wandbConfig")
    if wandb and "apiKey" in wandb:
        key = wandb.pop("apiKey")
        if wandb.get("enabled") and wandb.get("mode") != "offline":  # an offline or disabled run needs no key
            secrets["wandbApiKey"] = key
    name = f"accounts/{account_id}/reinforcementFineTuningJobs/{job_id}"
    try:
        with ctx.store.session() as session:
            if session.scalar(select(Job.seq).where(Job.account_id == account_id, Job.job_id == job_id)):
                raise already_exists(name)
            _refuse_over_quota(session, account_id, ctx.limits.max_queued_jobs_per_account)
            _resolve_references(session, account_id, job_id, spec)
            session.add(
                Job(
                    account_id=account_id,
                    job_id=job_id,
                    display_name=spec.get("displayName") or job_id,
                    spec=spec,
                    secrets=seal(ctx.layout.root, secrets),
                    state=PENDING,
                    status_message="queued",
                )
            )
    except IntegrityError:
        raise already_exists(name) from None
    ctx.wake_scheduler()
    return get_job(job_id, account_id, ctx)


def _refuse_over_quota(session: Session, account_id: str, most: int) -> None:
    unfinished = session.scalar(
        select(func.count())
        .select_from(Job)
        .where(Job.account_id == account_id, Job.state.not_in(TERMINAL_STATES))
    )
    if unfinished >= most:
        raise resource_exhausted(
            f"accounts/{account_id} already has {unfinished} unfinished jobs, this server's limit "
            f"({flag('max_queued_jobs_per_account')}); wait for some to finish or cancel them"
        )


def _resolve_references(session: Session, account_id: str, job_id: str, spec: dict[str, Any]) -> None:
    """Full resource names in the spec, each pointing at a usable resource of this account."""
    spec["dataset"] = _ready(session, account_id, "datasets", spec["dataset"], "dataset", "READY")
    if spec.get("evaluationDataset"):
        spec["evaluationDataset"] = _ready(
            session, account_id, "datasets", spec["evaluationDataset"], "evaluationDataset", "READY"
        )
    spec["evaluator"] = _ready(session, account_id, "evaluators", spec["evaluator"], "evaluator", "ACTIVE")
    if spec.get("mcpServer"):
        spec["mcpServer"] = _ready(
            session, account_id, "mcpServers", spec["mcpServer"], "mcpServer", "ACTIVE"
        )
    training = spec["trainingConfig"]
    if training.get("warmStartFrom"):
        training["warmStartFrom"] = _ready(
            session, account_id, "models", training["warmStartFrom"], "trainingConfig.warmStartFrom", "READY"
        )
    output_id = check_resource_id(
        short_id(training.get("outputModel") or job_id, "models", account_id), "trainingConfig.outputModel"
    )
    output_name = f"accounts/{account_id}/models/{output_id}"
    if find_resource(session, account_id, "models", output_id) is not None:
        raise invalid(
            f"trainingConfig.outputModel: {output_name} already exists; choose another output model name"
        )
    unfinished = session.scalars(
        select(Job).where(Job.account_id == account_id, Job.state.not_in(TERMINAL_STATES))
    )
    for other in unfinished:
        if other.spec["trainingConfig"].get("outputModel") == output_name:
            raise invalid(
                f"trainingConfig.outputModel: unfinished job {other.job_id} already writes {output_name}"
            )
    training["outputModel"] = output_name


def _ready(session: Session, account_id: str, kind: str, name: str, field: str, state: str) -> str:
    try:
        resource_id = short_id(name, kind, account_id)
    except ApiError:
        raise invalid(f"{field}: {name} not found") from None
    full = f"accounts/{account_id}/{kind}/{resource_id}"
    resource = find_resource(session, account_id, kind, resource_id)
    if resource is None:
        raise invalid(f"{field}: {full} not found")
    if resource.state != state:
        detail = resource.body.get("status", {}).get("message", "")
        raise invalid(
            f"{field}: {full} is {resource.state}, not {state}" + (f" ({detail})" if detail else "")
        )
    return full


@router.get("")
def list_jobs(
    account_id: AccountId,
    ctx: Ctx,
    pageSize: int | None = None,
    pageToken: str | None = None,
    orderBy: str | None = None,
    filter: str | None = None,
) -> dict:
    refuse_filter(filter)
    page = page_request(pageSize, pageToken, orderBy, set(ORDER_COLUMNS))
    with ctx.store.reading() as session:
        query = select(Job).where(Job.account_id == account_id)
        rows, next_token = fetch_page(session, query, page, ORDER_COLUMNS, Job.seq)
        return {"reinforcementFineTuningJobs": [render(job) for job in rows], "nextPageToken": next_token}


def _job(session: Session, account_id: str, job_id: str) -> Job:
    job = session.scalars(select(Job).where(Job.account_id == account_id, Job.job_id == job_id)).first()
    if job is None:
        raise not_found(f"accounts/{account_id}/reinforcementFineTuningJobs/{job_id}")
    return job


@router.get("/{job_id}")
def get_job_route(job_id: str, request: Request, account_id: AccountId, ctx: Ctx) -> dict:
    refuse_custom_method(job_id, request)
    return get_job(job_id, account_id, ctx)


def get_job(job_id: str, account_id: str, ctx: Ctx) -> dict:
    with ctx.store.reading() as session:
        return render(_job(session, account_id, job_id))


@router.get("/{job_id}/metrics")
def job_metrics(job_id: str, account_id: AccountId, ctx: Ctx) -> dict:
    with ctx.store.reading() as session:
        job = _job(session, account_id, job_id)
        rows = session.scalars(select(JobMetric).where(JobMetric.job_seq == job.seq).order_by(JobMetric.step))
        return {"metrics": [row.metrics for row in rows]}


@router.get("/{job_id}/stateHistory")
def job_state_history(job_id: str, account_id: AccountId, ctx: Ctx) -> dict:
    """Every state the job entered, oldest first, with its time and status message then."""
    with ctx.store.reading() as session:
        job = _job(session, account_id, job_id)
        return {
            "stateHistory": [
                {"state": entry.state, "time": rfc3339(entry.time), "message": entry.message}
                for entry in job_transitions(session, job.seq)
            ]
        }


@router.delete("/{job_id}")
def delete_job(job_id: str, request: Request, account_id: AccountId, ctx: Ctx) -> dict:
    refuse_custom_method(job_id, request)
    with ctx.store.session() as session:
        job = _job(session, account_id, job_id)
        if job.state in ACTIVE_STATES and job.worker_pid:
            kill_worker(job.worker_pid, job.seq)
        session.execute(delete(JobMetric).where(JobMetric.job_seq == job.seq))
        session.delete(job)
    shutil.rmtree(ctx.layout.job_dir(account_id, job_id), ignore_errors=True)
    ctx.storage.delete(ctx.layout.job_dir(account_id, job_id))
    ctx.wake_scheduler()
    return {}


@router.post("/{job_id}:cancel")
def cancel_job(job_id: str, account_id: AccountId, ctx: Ctx) -> dict:
    with ctx.store.session() as session:
        job = _job(session, account_id, job_id)
        if job.state in TERMINAL_STATES:
            raise failed_precondition(
                f"job {job_id} is already {job.state}; only unfinished jobs can be cancelled"
            )
        job.update_time = now()
        if job.state == PENDING:
            job.state = CANCELLED
            job.status_message = "cancelled before it started"
            job.completed_time = job.update_time
        else:
            job.cancel_requested = True
            job.status_message = "cancel requested: stopping now, keeping the last checkpoint"
        return render(job)


@router.post("/{job_id}:resume")
def resume_job(job_id: str, account_id: AccountId, ctx: Ctx) -> dict:
    with ctx.store.session() as session:
        job = _job(session, account_id, job_id)
        if job.state not in RESUMABLE_STATES:
            raise failed_precondition(
                f"job {job_id} is {job.state}; only FAILED or CANCELLED jobs can be resumed "
                "(interrupted jobs resume by themselves)"
            )
        job.state = PENDING
        job.status_code = "OK"
        job.status_message = "resumed: queued to continue from its last checkpoint"
        job.cancel_requested = False
        job.interruptions = 0
        job.completed_time = None
        job.queued_at = job.update_time = now()
        rendered = render(job)
    ctx.wake_scheduler()
    return rendered
