"""Abandoned uploads expire: an upload URL never used, a file PUT but never validated and a half-written PUT are
deleted once idle for the time-to-live; at server start every half-written file of the previous server goes."""

from __future__ import annotations

import os
import time

import pytest
from sqlalchemy import select

from rftlab.server.layout import StateLayout
from rftlab.server.store import Store, UploadSlot
from rftlab.server.uploads import expire_uploads

TTL_S = 3600.0


@pytest.fixture
def store(tmp_path):
    opened = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    yield opened
    opened.dispose()


def slot(store: Store, token: str, age_s: float, received: bool = False) -> None:
    with store.session() as session:
        session.add(
            UploadSlot(
                token=token,
                account_id="a",
                kind="datasets",
                resource_id="d",
                filename="rows.jsonl",
                size=10,
                received=received,
                create_time=time.time() - age_s,
            )
        )


def file_aged(layout: StateLayout, name: str, age_s: float) -> None:
    path = layout.upload_file(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"0123456789")
    then = time.time() - age_s
    os.utime(path, (then, then))


def tokens(store: Store) -> set[str]:
    with store.reading() as session:
        return set(session.scalars(select(UploadSlot.token)))


def test_idle_slots_and_their_files_expire_fresh_ones_stay(store, tmp_path):
    layout = StateLayout(tmp_path)
    slot(store, "unused", age_s=2 * TTL_S)
    slot(store, "received", age_s=2 * TTL_S, received=True)
    file_aged(layout, "received", 2 * TTL_S)
    slot(store, "writing", age_s=2 * TTL_S)
    file_aged(layout, "writing.partial", 1)  # a slow PUT still sending
    slot(store, "fresh", age_s=10, received=True)
    file_aged(layout, "fresh", 10)
    file_aged(layout, "orphan", 2 * TTL_S)

    expire_uploads(store, layout, TTL_S)

    assert tokens(store) == {"writing", "fresh"}
    assert sorted(p.name for p in layout.uploads_dir.iterdir()) == ["fresh", "writing.partial"]


def test_at_start_half_written_files_go(store, tmp_path):
    layout = StateLayout(tmp_path)
    for name in ("a.partial", "b.multipart", "c.taken"):
        file_aged(layout, name, 1)
    slot(store, "kept", age_s=1, received=True)
    file_aged(layout, "kept", 1)

    expire_uploads(store, layout, TTL_S, at_start=True)

    assert [p.name for p in layout.uploads_dir.iterdir()] == ["kept"]
