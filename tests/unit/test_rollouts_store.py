"""Which rollouts a step keeps, and the disk bound over every job's kept rollouts (a real SQLite store)."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from rftlab.server.rollouts import RolloutPolicy, kept, save_policy, store_rollouts
from rftlab.server.store import Account, Job, JobRollout, Store, sqlite_url


def rollout(group: int, candidate: int, reward: float | None) -> dict:
    return {
        "row_index": group,
        "group": group,
        "candidate": candidate,
        "messages": [{"role": "user", "content": "What is 1+1?"}, {"role": "assistant", "content": "2"}],
        "completion_text": "x" * 200,
        "reward": reward,
        "valid": reward is not None,
    }


def test_a_sample_keeps_the_best_and_worst_of_each_group_first():
    rollouts = [rollout(0, 0, 0.5), rollout(0, 1, 1.0), rollout(0, 2, None), rollout(0, 3, 0.2)]
    rollouts += [rollout(1, 0, 0.0), rollout(1, 1, 0.0), rollout(1, 2, 0.9), rollout(1, 3, 0.3)]
    picked = kept(rollouts, 4)
    # group 0: best 1.0 and worst the invalid one; group 1: best 0.9 and worst a 0.0
    assert [(r["group"], r["candidate"]) for r in picked] == [(0, 1), (0, 2), (1, 1), (1, 2)]
    assert kept(rollouts, None) == rollouts
    assert kept(rollouts, 100) == rollouts
    # then the others in the order reported, and the step's rollouts stay in that order
    assert [(r["group"], r["candidate"]) for r in kept(rollouts, 6)] == [
        (0, 0),
        (0, 1),
        (0, 2),
        (0, 3),
        (1, 1),
        (1, 2),
    ]
    assert kept(rollouts, 0) == []


@pytest.mark.parametrize(
    ("keep", "problem"), [("some", "'all' or 'sample:N'"), ("sample:-1", "'all' or 'sample:N'")]
)
def test_a_bad_keep_setting_names_the_flag_and_the_accepted_forms(keep, problem):
    with pytest.raises(ValueError, match="--keep-rollouts") as error:
        RolloutPolicy.parse(keep, 10)
    assert problem in str(error.value)
    with pytest.raises(ValueError, match="--rollouts-max-mb"):
        RolloutPolicy.parse("all", 0)


@pytest.fixture
def store(tmp_path):
    store = Store(sqlite_url(str(tmp_path / "rftlab.db")))
    with store.session() as session:
        session.add(Account(account_id="local"))
        session.flush()
        for job_id in ("first", "second"):
            session.add(Job(account_id="local", job_id=job_id, spec={}, state="JOB_STATE_RUNNING"))
    yield store
    store.dispose()


def seq_of(store: Store, job_id: str) -> int:
    with store.reading() as session:
        return session.scalar(select(Job.seq).where(Job.job_id == job_id))


def kept_steps(store: Store, job_id: str, kind: str = "train") -> dict[int, int]:
    with store.reading() as session:
        rows = session.execute(
            select(JobRollout.step, func.count())
            .where(JobRollout.job_seq == seq_of(store, job_id), JobRollout.kind == kind)
            .group_by(JobRollout.step)
        ).all()
    return dict(rows)


def test_the_default_policy_keeps_16_per_step_and_a_repeated_step_replaces_the_later_ones(store):
    first = seq_of(store, "first")
    group_of_8 = [rollout(g, c, c / 8) for g in range(8) for c in range(8)]
    for step in (1, 2, 3):
        store_rollouts(store, first, "train", step, group_of_8)
    assert kept_steps(store, "first") == {1: 16, 2: 16, 3: 16}
    # a worker killed after step 3 resumes from the checkpoint of step 1: step 2 comes again
    store_rollouts(store, first, "train", 2, group_of_8[:8])
    assert kept_steps(store, "first") == {1: 16, 2: 8}
    # an eval pass may report at the same step twice (sampled, greedy): both are kept
    store_rollouts(store, first, "eval", 0, [rollout(0, 0, 1.0)])
    store_rollouts(store, first, "eval", 0, [rollout(0, 0, 0.0)])
    assert kept_steps(store, "first", "eval") == {0: 2}
    with pytest.raises(ValueError, match="kind 'test'"):
        store_rollouts(store, first, "test", 1, [])


def test_non_finite_numbers_are_stored_as_null(store):
    bad = {**rollout(0, 0, 1.0), "metrics": {"score": float("nan")}, "advantage": float("inf")}
    store_rollouts(store, seq_of(store, "first"), "train", 1, [bad])
    with store.reading() as session:
        body = session.scalars(select(JobRollout.body)).one()
    assert body["metrics"] == {"score": None} and body["advantage"] is None


def test_past_the_disk_bound_the_oldest_rollouts_go_first(store):
    save_policy(store, RolloutPolicy(per_step=None, max_bytes=20_000))
    first, second = seq_of(store, "first"), seq_of(store, "second")
    eight = [rollout(0, c, 1.0) for c in range(8)]  # about 400 bytes each
    for step in range(1, 6):
        store_rollouts(store, first, "train", step, eight)
    with store.reading() as session:
        total = session.scalar(select(func.sum(JobRollout.size)))
    assert 8 * 5 * 300 < total <= 20_000
    for step in range(1, 11):
        store_rollouts(store, second, "train", step, eight)
    with store.reading() as session:
        total = session.scalar(select(func.sum(JobRollout.size)))
    assert total <= 20_000
    assert kept_steps(store, "first") == {}  # the older job's went first
    second_steps = kept_steps(store, "second")
    assert max(second_steps) == 10 and min(second_steps) > 1  # and then the second job's oldest steps
