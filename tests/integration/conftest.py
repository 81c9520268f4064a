"""The servers the integration tests run against: `server`, one per module that queues jobs without training them
(`--max-running-jobs 0`; a module defines its own `server` to change that), with a `client` holding the local key;
and the training server the slow server tests share for the session (one job at a time, the tiny model's dataset
and evaluator uploaded, secrets in its own environment that no worker may see); `storage_server`, a module's
training server whose files live in its `bucket` (`--storage-url file://...`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from server_harness import SERVER_SECRETS, LocalServer, add_training_inputs


@contextmanager
def training_server_at(folder: Path, env: dict[str, str]) -> Iterator[LocalServer]:
    """A server that trains one job at a time, with `env`, the training inputs uploaded (`add_training_inputs`)."""
    with LocalServer.under(folder, max_running_jobs=1, extra_env=env) as running:
        with running.client() as client:
            add_training_inputs(client)
        yield running


@pytest.fixture(scope="session")
def training_server(tmp_path_factory):
    with training_server_at(tmp_path_factory.mktemp("training-server"), SERVER_SECRETS) as running:
        yield running


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with LocalServer.under(tmp_path_factory.mktemp("server"), max_running_jobs=0) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    with server.client() as c:
        yield c


@pytest.fixture(scope="module")
def bucket(tmp_path_factory) -> Path:
    """A folder standing for an object store: `storage_server`'s `--storage-url file://...`."""
    return tmp_path_factory.mktemp("storage") / "bucket"


@pytest.fixture(scope="module")
def storage_server(bucket, tmp_path_factory):
    """One job at a time, every dataset, evaluator, checkpoint and adapter kept in `bucket`; the training inputs
    uploaded (see `add_training_inputs`)."""
    env = {"RFTLAB_STORAGE_URL": f"file://{bucket}"}
    with training_server_at(tmp_path_factory.mktemp("storage-server"), env) as running:
        yield running
