"""The training server the slow server tests share: one `rftlab serve` for the session (one job at a time, the
tiny model's dataset and evaluator uploaded, secrets in its own environment that no worker may see)."""

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
