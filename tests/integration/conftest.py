"""The servers the integration tests run against: `server`, one per module that queues jobs without training them
(`--max-running-jobs 0`; a module defines its own `server` to change that), with a `client` holding the local key;
and the training server the slow server tests share for the session (one job at a time, the tiny model's dataset
and evaluator uploaded, secrets in its own environment that no worker may see)."""

from __future__ import annotations

import pytest
from server_harness import SERVER_SECRETS, LocalServer, add_training_inputs


@pytest.fixture(scope="session")
def training_server(tmp_path_factory):
    with LocalServer.under(
        tmp_path_factory.mktemp("training-server"), max_running_jobs=1, extra_env=SERVER_SECRETS
    ) as running:
        with running.client() as client:
            add_training_inputs(client)
        yield running


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with LocalServer.under(tmp_path_factory.mktemp("server"), max_running_jobs=0) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    with server.client() as c:
        yield c
