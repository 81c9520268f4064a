"""The store on SQLite (WAL) and on a real PostgreSQL server: constraints, JSON round trips, metric upserts, and
many writers at once (threads, and separate processes as the job workers are)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from server_harness import (
    LocalServer,
    arithmetic_jsonl,
    create_evaluator,
    fresh_postgres_database,
    upload_dataset,
)
from sqlalchemy import create_engine, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from rftlab.fireworks.contract import CANCELLED, COMPLETED, PENDING, RUNNING, VALIDATING
from rftlab.server.accounts import account_for_key, create_key
from rftlab.server.store import ApiKey, Base, Job, JobMetric, JobTransition, Resource, Store, job_transitions


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture
def store(database_url):
    opened = Store(database_url)
    yield opened
    opened.dispose()


def new_job(store: Store, job_id: str = "job") -> int:
    with store.session() as session:
        job = Job(
            account_id="a", job_id=job_id, spec={"trainingConfig": {"loraRank": 8}}, state="JOB_STATE_PENDING"
        )
        session.add(job)
        session.flush()
        return job.seq


def test_sqlite_runs_in_wal_mode(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'wal.db'}")
    with store.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_sqlite_reads_do_not_wait_for_a_writer(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'rw.db'}")
    new_job(store)
    with store.session() as writing:
        writing.add(Resource(account_id="a", kind="datasets", resource_id="new", state="READY", body={}))
        writing.flush()  # the write lock is held until this block ends
        with store.reading() as reading:
            assert reading.scalar(select(func.count()).select_from(Job)) == 1
            assert reading.scalar(select(func.count()).select_from(Resource)) == 0, (
                "uncommitted rows stay unseen"
            )


def test_resource_ids_are_unique_per_account_and_kind(store):
    with store.session() as session:
        session.add(Resource(account_id="a", kind="datasets", resource_id="d", state="READY", body={"x": 1}))
        session.add(Resource(account_id="b", kind="datasets", resource_id="d", state="READY", body={}))
        session.add(Resource(account_id="a", kind="models", resource_id="d", state="READY", body={}))
    with pytest.raises(IntegrityError), store.session() as session:
        session.add(Resource(account_id="a", kind="datasets", resource_id="d", state="READY", body={}))
    with store.session() as session:
        assert session.scalar(select(func.count()).select_from(Resource)) == 3


def test_json_bodies_round_trip(store):
    spec = {
        "trainingConfig": {"learningRate": 1e-4, "outputModel": "accounts/a/models/m"},
        "tags": ["x", None],
        "n": 8,
    }
    with store.session() as session:
        session.add(Job(account_id="a", job_id="j", spec=spec, state="JOB_STATE_PENDING"))
    with store.session() as session:
        assert session.scalars(select(Job)).one().spec == spec


def test_a_repeated_step_replaces_its_metrics(store):
    seq = new_job(store)
    for reward in (0.1, 0.2):
        with store.session() as session:
            session.merge(JobMetric(job_seq=seq, step=1, metrics={"step": 1, "reward_mean": reward}))
    with store.session() as session:
        rows = session.scalars(select(JobMetric)).all()
        assert [(row.step, row.metrics["reward_mean"]) for row in rows] == [(1, 0.2)]


def test_keys_are_stored_hashed_and_resolve_to_their_account(store):
    key = create_key(store, "team")
    assert account_for_key(store, key) == "team"
    assert account_for_key(store, key + "x") is None
    with store.session() as session:
        hashes = list(session.scalars(select(ApiKey.key_hash)))
    assert len(hashes) == 1 and key not in hashes[0]


WRITER = textwrap.dedent(
    """
    import sys
    from rftlab.server.store import Job, JobMetric, Store
    from sqlalchemy import update
    store = Store(sys.argv[1])
    seq, first = int(sys.argv[2]), int(sys.argv[3])
    for step in range(first, first + 40):
        with store.session() as session:
            session.merge(JobMetric(job_seq=seq, step=step, metrics={"step": step}))
            session.execute(update(Job).where(Job.seq == seq).values(progress={"step": step}))
    """
)


def test_threads_and_processes_write_at_once_without_losing_anything(store, database_url):
    seq = new_job(store)
    processes = [
        subprocess.Popen([sys.executable, "-c", WRITER, database_url, str(seq), str(1000 + 100 * i)])
        for i in range(2)
    ]

    def thread_writes(index: int) -> None:
        for step in range(index * 40, index * 40 + 40):
            with store.session() as session:
                session.merge(JobMetric(job_seq=seq, step=step, metrics={"step": step}))
                job = session.get(Job, seq)
                job.progress = {"step": step}

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(thread_writes, range(8)))
    assert [process.wait(timeout=120) for process in processes] == [0, 0]
    with store.session() as session:
        steps = set(session.scalars(select(JobMetric.step).where(JobMetric.job_seq == seq)))
    expected = set(range(320)) | set(range(1000, 1040)) | set(range(1100, 1140))
    assert steps == expected


@pytest.mark.postgres
def test_the_server_works_against_postgres(tmp_path):
    with (
        fresh_postgres_database() as url,
        LocalServer.under(tmp_path, database_url=url, max_running_jobs=0) as server,
    ):
        with server.client() as client:
            assert upload_dataset(client, "local", "rows", arithmetic_jsonl(12)).status_code == 200
            assert create_evaluator(client, "local", "exact")["state"] == "ACTIVE"
            job = {"dataset": "rows", "evaluator": "exact", "trainingConfig": {"baseModel": "tiny-arith"}}
            params = {"reinforcementFineTuningJobId": "on-postgres"}
            assert (
                client.post(
                    "/v1/accounts/local/reinforcementFineTuningJobs", params=params, json=job
                ).status_code
                == 200
            )
            again = client.post("/v1/accounts/local/reinforcementFineTuningJobs", params=params, json=job)
            assert again.status_code == 409
            listed = client.get("/v1/accounts/local/reinforcementFineTuningJobs").json()
            assert [j["name"] for j in listed["reinforcementFineTuningJobs"]] == [
                "accounts/local/reinforcementFineTuningJobs/on-postgres"
            ]
        assert not (server.state_dir / "rftlab.db").exists()


def transitions(store: Store, seq: int) -> list[tuple[str, float, str]]:
    with store.reading() as session:
        return [(t.state, t.time, t.message) for t in job_transitions(session, seq)]


def test_every_state_a_job_enters_is_recorded_whoever_writes_it(store):
    seq = new_job(store)
    with store.session() as session:
        job = session.get(Job, seq)
        created = job.create_time
        job.state, job.status_message, job.update_time = VALIDATING, "validating inputs", 1000.0
    with store.session() as session:  # a plain UPDATE, as the job worker writes
        session.execute(
            update(Job)
            .where(Job.seq == seq)
            .values(state=RUNNING, status_message="training", update_time=1001.0)
        )
        session.execute(update(Job).where(Job.seq == seq).values(heartbeat_at=1002.0, progress={"step": 1}))
        session.execute(update(Job).where(Job.seq == seq).values(state=RUNNING, update_time=1003.0))
    before = time.time()
    with store.session() as session:  # a writer that leaves update_time alone gets the database's clock
        session.execute(update(Job).where(Job.seq == seq).values(state=CANCELLED, status_message="cancelled"))
    after = time.time()
    history = transitions(store, seq)
    assert [(state, message) for state, _, message in history] == [
        (PENDING, ""),
        (VALIDATING, "validating inputs"),
        (RUNNING, "training"),
        (CANCELLED, "cancelled"),
    ]
    assert [at for _, at, _ in history[:3]] == [created, 1000.0, 1001.0]
    assert before - 1 <= history[3][1] <= after + 1
    other = new_job(store, "other")
    assert [state for state, _, _ in transitions(store, other)] == [PENDING]
    with store.session() as session:
        session.delete(session.get(Job, seq))
    assert transitions(store, seq) == [] and len(transitions(store, other)) == 1


def test_a_database_older_than_the_history_gets_it_with_what_it_knew(database_url):
    old_tables = [table for table in Base.metadata.sorted_tables if table.name != JobTransition.__tablename__]
    engine = create_engine(database_url)
    Base.metadata.create_all(engine, tables=old_tables)
    with engine.begin() as connection:
        for job_id, state, message in [("queued", PENDING, "queued"), ("done", COMPLETED, "trained")]:
            connection.execute(
                insert(Job).values(
                    account_id="a",
                    job_id=job_id,
                    spec={},
                    state=state,
                    status_message=message,
                    create_time=10.0,
                    update_time=20.0,
                )
            )
    engine.dispose()
    store = Store(database_url)
    try:
        with store.reading() as session:
            seqs = dict(session.execute(select(Job.job_id, Job.seq)).all())
        assert transitions(store, seqs["queued"]) == [(PENDING, 20.0, "queued")]
        done = transitions(store, seqs["done"])
        assert [(state, at) for state, at, _ in done] == [(PENDING, 10.0), (COMPLETED, 20.0)]
        assert "not recorded" in done[0][2] and done[1][2] == "trained"
        with store.session() as session:  # and records from now on
            session.execute(
                update(Job).where(Job.seq == seqs["queued"]).values(state=RUNNING, update_time=30.0)
            )
        assert transitions(store, seqs["queued"])[-1] == (RUNNING, 30.0, "queued")
    finally:
        store.dispose()
