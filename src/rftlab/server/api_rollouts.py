"""A job's kept rollouts (rftlab.server.rollouts keeps them), beside the job:

GET /v1/accounts/{a}/reinforcementFineTuningJobs/{j}/rollouts?kind=&step=&minReward=&maxReward=&valid=
                                                              &orderBy=&pageSize=&pageToken=
GET /v1/accounts/{a}/reinforcementFineTuningJobs/{j}/rolloutSteps     (each kept step: count, valid, reward)
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlalchemy import Integer, cast, func, select
from sqlalchemy.orm import Session

from rftlab.server.api_common import AccountId, Ctx, fetch_page, page_request
from rftlab.server.errors import invalid, not_found
from rftlab.server.rollouts import KINDS
from rftlab.server.store import Job, JobRollout

router = APIRouter(prefix="/v1/accounts/{account_id}/reinforcementFineTuningJobs")
ORDER_COLUMNS = {"step": JobRollout.step, "reward": JobRollout.reward, "group": JobRollout.group_index}


def _job_seq(session: Session, account_id: str, job_id: str) -> int:
    seq = session.scalar(select(Job.seq).where(Job.account_id == account_id, Job.job_id == job_id))
    if seq is None:
        raise not_found(f"accounts/{account_id}/reinforcementFineTuningJobs/{job_id}")
    return seq


def _as_bool(name: str, value: str | None) -> bool | None:
    if value is None or value == "":
        return None
    if value.lower() in ("true", "1"):
        return True
    if value.lower() in ("false", "0"):
        return False
    raise invalid(f"{name}: use true or false (got {value!r})")


def render(row: JobRollout) -> dict[str, Any]:
    return {**row.body, "kind": row.kind, "step": row.step}


@router.get("/{job_id}/rollouts")
def list_rollouts(
    job_id: str,
    account_id: AccountId,
    ctx: Ctx,
    kind: str = "train",
    step: int | None = None,
    minReward: float | None = None,
    maxReward: float | None = None,
    valid: str | None = None,
    pageSize: int | None = None,
    pageToken: str | None = None,
    orderBy: str | None = None,
) -> dict:
    """A job's kept rollouts of one kind (`train` or `eval`), in step and group order (then as reported) unless
    `orderBy` says otherwise (`step`, `reward`, `group`, each optionally `desc`)."""
    if kind not in KINDS:
        raise invalid(f"kind: must be one of {', '.join(KINDS)} (got {kind!r})")
    only_valid = _as_bool("valid", valid)
    page = page_request(pageSize, pageToken, orderBy or "step,group", set(ORDER_COLUMNS))
    with ctx.store.reading() as session:
        query = select(JobRollout).where(
            JobRollout.job_seq == _job_seq(session, account_id, job_id), JobRollout.kind == kind
        )
        if step is not None:
            query = query.where(JobRollout.step == step)
        if minReward is not None:
            query = query.where(JobRollout.reward >= minReward)
        if maxReward is not None:
            query = query.where(JobRollout.reward <= maxReward)
        if only_valid is not None:
            query = query.where(JobRollout.valid.is_(only_valid))
        rows, next_token = fetch_page(session, query, page, ORDER_COLUMNS, JobRollout.seq)
        return {"rollouts": [render(row) for row in rows], "nextPageToken": next_token}


@router.get("/{job_id}/rolloutSteps")
def rollout_steps(job_id: str, account_id: AccountId, ctx: Ctx) -> dict:
    """Each step (and eval pass) with kept rollouts: how many, how many valid, their mean reward."""
    with ctx.store.reading() as session:
        rows = session.execute(
            select(
                JobRollout.kind,
                JobRollout.step,
                func.count(),
                func.sum(cast(JobRollout.valid, Integer)),
                func.avg(JobRollout.reward),
            )
            .where(JobRollout.job_seq == _job_seq(session, account_id, job_id))
            .group_by(JobRollout.kind, JobRollout.step)
            .order_by(JobRollout.kind, JobRollout.step)
        ).all()
    return {
        "steps": [
            {"kind": kind, "step": step, "count": count, "validCount": int(valid or 0), "rewardMean": mean}
            for kind, step, count, valid, mean in rows
        ]
    }
