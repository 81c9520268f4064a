"""Which jobs still need a dataset, evaluator or model."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from rftlab.server.errors import failed_precondition
from rftlab.server.store import TERMINAL_JOB_STATES, Job


def referenced_names(spec: dict) -> set[str]:
    training = spec.get("trainingConfig", {})
    return {
        name
        for name in (
            spec.get("dataset"),
            spec.get("evaluationDataset"),
            spec.get("evaluator"),
            training.get("warmStartFrom"),
        )
        if name
    }


def refuse_if_used_by_active_job(session: Session, account_id: str, name: str) -> None:
    unfinished = session.scalars(
        select(Job).where(Job.account_id == account_id, Job.state.not_in(TERMINAL_JOB_STATES))
    )
    users = [job.job_id for job in unfinished if name in referenced_names(job.spec)]
    if users:
        raise failed_precondition(
            f"{name} is used by unfinished job(s) {', '.join(users)}; cancel or delete them first"
        )
