"""The store on SQLite (WAL) and on a real PostgreSQL server: constraints, JSON round trips, metric upserts, and
many writers at once (threads, and separate processes as the job workers are)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import pytest
from server_harness import (
    LocalServer,
    arithmetic_jsonl,
    create_evaluator,
    fresh_postgres_database,
    upload_dataset,
)
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from rftlab.server.accounts import account_for_key, create_key
from rftlab.server.store import ApiKey, Job, JobMetric, Resource, Store


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
