"""The local backend's database: SQLAlchemy tables and sessions.

SQLite (the default) runs in WAL mode with a busy timeout. Writing transactions start with `BEGIN IMMEDIATE`, so
concurrent request threads and worker processes queue for the write lock instead of failing on a stale snapshot;
read-only ones (`Store.reading`) use a plain deferred BEGIN on a second engine and never wait for writers.
PostgreSQL works through the same code (`postgresql+psycopg://...`).

Tables missing from an existing database are created at start (`create_all`); that is how the schema grows.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    select,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from rftlab.fireworks.contract import PENDING

SQLITE_BUSY_TIMEOUT_MS = 60_000
DATABASE_URL_ENV = "RFTLAB_DATABASE_URL"
"""How the scheduler hands a worker process the database URL (which may hold a password)."""


class Base(DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "accounts"
    account_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    create_time: Mapped[float] = mapped_column(Float, default=time.time)


class ApiKey(Base):
    __tablename__ = "api_keys"
    key_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.account_id"), index=True)
    create_time: Mapped[float] = mapped_column(Float, default=time.time)


class Resource(Base):
    """A dataset, evaluator or model: its Fireworks JSON body plus the columns used to find and order it."""

    __tablename__ = "resources"
    __table_args__ = (UniqueConstraint("account_id", "kind", "resource_id"),)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(String(63), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    resource_id: Mapped[str] = mapped_column(String(63))
    display_name: Mapped[str] = mapped_column(String(255), default="")
    state: Mapped[str] = mapped_column(String(32))
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    create_time: Mapped[float] = mapped_column(Float, default=time.time)
    update_time: Mapped[float] = mapped_column(Float, default=time.time)


def find_resource(session: Session, account_id: str, kind: str, resource_id: str) -> Resource | None:
    return session.scalars(
        select(Resource).where(
            Resource.account_id == account_id, Resource.kind == kind, Resource.resource_id == resource_id
        )
    ).first()


class Job(Base):
    __tablename__ = "rft_jobs"
    __table_args__ = (UniqueConstraint("account_id", "job_id"),)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(String(63), index=True)
    job_id: Mapped[str] = mapped_column(String(63))
    display_name: Mapped[str] = mapped_column(String(255), default="")
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    """The request with server defaults applied, secrets removed."""
    secrets: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """Values accepted on create but never echoed (`wandbConfig.apiKey`)."""
    state: Mapped[str] = mapped_column(String(32), index=True)
    status_code: Mapped[str] = mapped_column(String(32), default="OK")
    status_message: Mapped[str] = mapped_column(Text, default="")
    progress: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    output_metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    create_time: Mapped[float] = mapped_column(Float, default=time.time)
    update_time: Mapped[float] = mapped_column(Float, default=time.time)
    completed_time: Mapped[float | None] = mapped_column(Float, nullable=True)
    queued_at: Mapped[float] = mapped_column(Float, default=time.time)
    """Queue order: creation time, or the time of the last resume."""
    worker_pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    heartbeat_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    interruptions: Mapped[int] = mapped_column(Integer, default=0)
    """Worker deaths (SIGKILL, server crash) recovered from so far."""


class JobTransition(Base):
    """One state a job entered: when, and its status message then. Written by the database itself (triggers on
    `rft_jobs`, see `TRANSITION_TRIGGERS`), so every writer of a job's state is recorded, ORM or plain UPDATE,
    server or worker process."""

    __tablename__ = "rft_job_transitions"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    """Order of the transitions (of one job: the order its row was written in)."""
    job_seq: Mapped[int] = mapped_column(ForeignKey("rft_jobs.seq", ondelete="CASCADE"), index=True)
    state: Mapped[str] = mapped_column(String(32))
    time: Mapped[float] = mapped_column(Float)
    """The job's `create_time` for its first state, then the `update_time` written with each new state (the
    database's clock if a writer left it unchanged)."""
    message: Mapped[str] = mapped_column(Text, default="")


_NOW_SQLITE = "(julianday('now') - 2440587.5) * 86400.0"
TRANSITION_TRIGGERS = {
    "sqlite": [
        """CREATE TRIGGER rft_job_created AFTER INSERT ON rft_jobs BEGIN
            INSERT INTO rft_job_transitions (job_seq, state, time, message)
            VALUES (NEW.seq, NEW.state, NEW.create_time, NEW.status_message);
        END""",
        f"""CREATE TRIGGER rft_job_state_changed AFTER UPDATE OF state ON rft_jobs
        WHEN NEW.state IS NOT OLD.state BEGIN
            INSERT INTO rft_job_transitions (job_seq, state, time, message)
            VALUES (NEW.seq, NEW.state,
                    CASE WHEN NEW.update_time IS OLD.update_time THEN {_NOW_SQLITE} ELSE NEW.update_time END,
                    NEW.status_message);
        END""",
    ],
    "postgresql": [
        """CREATE OR REPLACE FUNCTION rft_job_record_transition() RETURNS trigger AS $$
        DECLARE entered double precision;
        BEGIN
            IF TG_OP = 'INSERT' THEN
                entered := NEW.create_time;
            ELSIF NEW.state IS NOT DISTINCT FROM OLD.state THEN
                RETURN NULL;
            ELSIF NEW.update_time IS DISTINCT FROM OLD.update_time THEN
                entered := NEW.update_time;
            ELSE
                entered := extract(epoch FROM clock_timestamp());
            END IF;
            INSERT INTO rft_job_transitions (job_seq, state, time, message)
            VALUES (NEW.seq, NEW.state, entered, NEW.status_message);
            RETURN NULL;
        END $$ LANGUAGE plpgsql""",
        """CREATE TRIGGER rft_job_state_changed AFTER INSERT OR UPDATE OF state ON rft_jobs
        FOR EACH ROW EXECUTE FUNCTION rft_job_record_transition()""",
    ],
}
"""The database records a job's state on insert and on every change of it."""
BACKFILL_TRANSITIONS = [
    # jobs of a database older than the table: their creation (every job is queued first) and their state now
    f"""INSERT INTO rft_job_transitions (job_seq, state, time, message)
    SELECT seq, '{PENDING}', create_time, 'queued (the states between this and the next were not recorded)'
    FROM rft_jobs WHERE state <> '{PENDING}' ORDER BY seq""",
    """INSERT INTO rft_job_transitions (job_seq, state, time, message)
    SELECT seq, state, update_time, status_message FROM rft_jobs ORDER BY seq""",
]


@event.listens_for(JobTransition.__table__, "after_create")
def _record_transitions(_table: Any, connection: Connection, **_kw: Any) -> None:
    dialect = connection.dialect.name
    if dialect not in TRANSITION_TRIGGERS:
        raise ValueError(
            f"the store supports sqlite and postgresql databases, not {dialect}: "
            "use sqlite:///PATH or postgresql+psycopg://..."
        )
    for statement in BACKFILL_TRANSITIONS + TRANSITION_TRIGGERS[dialect]:
        connection.exec_driver_sql(statement)


def job_transitions(session: Session, job_seq: int) -> list[JobTransition]:
    return list(
        session.scalars(
            select(JobTransition).where(JobTransition.job_seq == job_seq).order_by(JobTransition.seq)
        )
    )


class JobMetric(Base):
    __tablename__ = "rft_job_metrics"
    job_seq: Mapped[int] = mapped_column(ForeignKey("rft_jobs.seq", ondelete="CASCADE"), primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)


class UploadSlot(Base):
    """A one-file upload URL handed out by `:getUploadEndpoint`; the token in the URL is its only credential."""

    __tablename__ = "upload_slots"
    token: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(63))
    kind: Mapped[str] = mapped_column(String(16))
    resource_id: Mapped[str] = mapped_column(String(63))
    filename: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(Integer)
    received: Mapped[bool] = mapped_column(Boolean, default=False)
    create_time: Mapped[float] = mapped_column(Float, default=time.time)


def _configure_sqlite(engine: Engine, begin: str) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # let the "begin" hook below issue BEGIN itself
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql(begin)


class Store:
    def __init__(self, database_url: str) -> None:
        self.url = database_url
        is_sqlite = database_url.startswith("sqlite")
        connect_args = (
            {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000} if is_sqlite else {}
        )
        self.engine = create_engine(database_url, connect_args=connect_args, pool_pre_ping=not is_sqlite)
        self._read_engine = self.engine
        if is_sqlite:
            _configure_sqlite(self.engine, "BEGIN IMMEDIATE")
            self._read_engine = create_engine(database_url, connect_args=connect_args)
            _configure_sqlite(self._read_engine, "BEGIN")
        Base.metadata.create_all(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._read_sessions = sessionmaker(self._read_engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        with self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A read-only transaction: nothing is committed (closing the session rolls back)."""
        with self._read_sessions() as session:
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
        self._read_engine.dispose()


def sqlite_url(path: str) -> str:
    return f"sqlite:///{path}"


class JobRollout(Base):
    """One kept rollout of a job's training step or eval pass (rftlab.server.rollouts decides which are kept)."""

    __tablename__ = "rft_job_rollouts"
    __table_args__ = (Index("ix_rft_job_rollouts_job_step", "job_seq", "kind", "step"),)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_seq: Mapped[int] = mapped_column(ForeignKey("rft_jobs.seq", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(8))
    """train | eval"""
    step: Mapped[int] = mapped_column(Integer)
    group_index: Mapped[int] = mapped_column(Integer)
    candidate: Mapped[int] = mapped_column(Integer)
    reward: Mapped[float | None] = mapped_column(Float, nullable=True)
    valid: Mapped[bool] = mapped_column(Boolean)
    size: Mapped[int] = mapped_column(Integer, index=True)
    """Bytes of `body` as JSON: what the disk bound adds up."""
    body: Mapped[dict[str, Any]] = mapped_column(JSON)


class ServerSetting(Base):
    """A setting `rftlab serve` was started with that its job workers read too (they share only the database)."""

    __tablename__ = "server_settings"
    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON)


class DashboardSession(Base):
    """A dashboard login: the SHA-256 of the session cookie's random token, never the token itself."""

    __tablename__ = "dashboard_sessions"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.account_id", ondelete="CASCADE"))
    expires_at: Mapped[float] = mapped_column(Float)
