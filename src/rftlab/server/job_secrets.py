"""A job's secrets (its W&B key) as the database keeps them: one Fernet token under the server key, which only the
server process reads (evaluators cannot: the sandbox hides the state dir)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rftlab.server.server_key import server_fernet

SEALED = "sealed"


def seal(state_root: Path, secrets: dict[str, str]) -> dict[str, Any]:
    if not secrets:
        return {}
    return {SEALED: server_fernet(state_root).encrypt(json.dumps(secrets).encode()).decode()}


def unseal(state_root: Path, stored: dict[str, Any] | None) -> dict[str, str]:
    if not stored or SEALED not in stored:
        return {}
    return json.loads(server_fernet(state_root).decrypt(stored[SEALED].encode()))
