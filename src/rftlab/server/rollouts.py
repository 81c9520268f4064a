"""The rollouts a job keeps: which ones (the retention policy) and storing them (`rftlab.server.api_rollouts`
serves them).

The policy is a setting of `rftlab serve` (`--keep-rollouts all|sample:N`, `--rollouts-max-mb M`), saved in the
database because the job workers that store rollouts share only the database with the server. `sample:N` keeps N
rollouts per step (and per eval pass): the best and the worst of each group first, group by group, then the
others. The disk bound is over every job: when the kept rollouts pass it, the oldest go first.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from rftlab.server.store import JobRollout, ServerSetting, Store

KINDS = ("train", "eval")
DEFAULT_KEEP = "sample:16"
DEFAULT_MAX_MB = 1024
POLICY_SETTING = "rollouts"
PRUNE_BATCH = 2000


@dataclass(frozen=True)
class RolloutPolicy:
    per_step: int | None
    """Rollouts kept per step and eval pass; None keeps them all."""
    max_bytes: int

    @classmethod
    def parse(cls, keep: str, max_mb: float) -> RolloutPolicy:
        """`all` or `sample:N` (N ≥ 0), and the bound in MB; ValueError says what is wrong and what is accepted."""
        matched = re.fullmatch(r"all|sample:(\d+)", keep.strip())
        if not matched:
            raise ValueError(f"--keep-rollouts {keep!r}: use 'all' or 'sample:N' (N rollouts per step)")
        if not max_mb > 0:
            raise ValueError(f"--rollouts-max-mb {max_mb}: must be > 0")
        per_step = None if matched.group(1) is None else int(matched.group(1))
        return cls(per_step=per_step, max_bytes=int(max_mb * 1024 * 1024))


DEFAULT_POLICY = RolloutPolicy.parse(DEFAULT_KEEP, DEFAULT_MAX_MB)


def save_policy(store: Store, policy: RolloutPolicy) -> None:
    with store.session() as session:
        session.merge(
            ServerSetting(
                name=POLICY_SETTING, value={"perStep": policy.per_step, "maxBytes": policy.max_bytes}
            )
        )


def load_policy(session: Session) -> RolloutPolicy:
    setting = session.get(ServerSetting, POLICY_SETTING)
    if setting is None:
        return DEFAULT_POLICY
    return RolloutPolicy(per_step=setting.value["perStep"], max_bytes=setting.value["maxBytes"])


def _json_safe(value: Any) -> Any:
    """Non-finite floats become null, so every stored body is valid JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _rank(rollout: dict[str, Any]) -> float:
    reward = rollout.get("reward")
    return reward if rollout.get("valid") and isinstance(reward, (int, float)) else -math.inf


def kept(rollouts: list[dict[str, Any]], per_step: int | None) -> list[dict[str, Any]]:
    """The rollouts a step keeps: all, or `per_step` of them, the best and worst of each group first."""
    if per_step is None or len(rollouts) <= per_step:
        return rollouts
    groups: dict[int, list[int]] = {}
    for position, rollout in enumerate(rollouts):
        groups.setdefault(int(rollout.get("group", 0)), []).append(position)
    extremes: list[int] = []
    for positions in groups.values():
        ranked = sorted(positions, key=lambda p: _rank(rollouts[p]), reverse=True)
        extremes += ranked[:1] + ranked[-1:] if len(ranked) > 1 else ranked
    chosen = set(extremes[:per_step])
    for position in range(len(rollouts)):
        if len(chosen) >= per_step:
            break
        chosen.add(position)
    return [rollouts[p] for p in sorted(chosen)]


def store_rollouts(store: Store, job_seq: int, kind: str, step: int, rollouts: list[dict[str, Any]]) -> None:
    """Keep a step's rollouts under the server's policy. A step reported again (a job resumed after its worker
    died re-runs the steps after its last checkpoint) replaces what was kept for it and for the steps after."""
    if kind not in KINDS:
        raise ValueError(f"rollouts kind {kind!r}: must be one of {', '.join(KINDS)}")
    with store.session() as session:
        policy = load_policy(session)
        # an eval pass may report its sampled and greedy rollouts at the same step: only later steps are stale
        stale_from = step if kind == "train" else step + 1
        session.execute(
            delete(JobRollout).where(
                JobRollout.job_seq == job_seq, JobRollout.kind == kind, JobRollout.step >= stale_from
            )
        )
        for rollout in kept(rollouts, policy.per_step):
            body = _json_safe(rollout)
            reward = body.get("reward")
            session.add(
                JobRollout(
                    job_seq=job_seq,
                    kind=kind,
                    step=step,
                    group_index=int(body.get("group", 0)),
                    candidate=int(body.get("candidate", 0)),
                    reward=float(reward) if isinstance(reward, (int, float)) else None,
                    valid=bool(body.get("valid")),
                    size=len(json.dumps(body)),
                    body=body,
                )
            )
        session.flush()
        _prune(session, policy.max_bytes)


def _prune(session: Session, max_bytes: int) -> None:
    """Drop the oldest kept rollouts (of any job) until the total is within the bound."""
    excess = (session.scalar(select(func.sum(JobRollout.size))) or 0) - max_bytes
    last_seq = None
    while excess > 0:
        query = select(JobRollout.seq, JobRollout.size).order_by(JobRollout.seq).limit(PRUNE_BATCH)
        if last_seq is not None:
            query = query.where(JobRollout.seq > last_seq)
        batch = session.execute(query).all()
        if not batch:
            break
        for seq, size in batch:
            last_seq, excess = seq, excess - size
            if excess <= 0:
                break
    if last_seq is not None:
        session.execute(delete(JobRollout).where(JobRollout.seq <= last_seq))
