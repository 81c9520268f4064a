"""The server's own symmetric key (`<state>/server.key`, mode 0600), created on first use: it encrypts account
secrets at rest and signs the build-log URLs handed out by `:getBuildLogEndpoint`."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from cryptography.fernet import Fernet

KEY_FILENAME = "server.key"
_lock = threading.Lock()


def server_fernet(state_root: Path) -> Fernet:
    path = state_root / KEY_FILENAME
    with _lock:
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "wb") as out:
                out.write(Fernet.generate_key())
        return Fernet(path.read_bytes().strip())
