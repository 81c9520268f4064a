"""The server's own symmetric key (`<state>/server.key`, mode 0600), created on first use: it encrypts account
secrets at rest and signs the build-log URLs handed out by `:getBuildLogEndpoint`. A job worker whose node does not
share the state dir (`rftlab serve --storage-url`) gets it in its environment and keeps it in its node's cache."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from cryptography.fernet import Fernet

KEY_FILENAME = "server.key"
SERVER_KEY_ENV = "RFTLAB_SERVER_KEY"
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


def server_key_text(state_root: Path) -> str:
    server_fernet(state_root)
    return (state_root / KEY_FILENAME).read_text().strip()


def install_server_key(state_root: Path, key: str) -> None:
    """`key` as the server key under `state_root` (a node's cache), mode 0600 from its first byte."""
    path = state_root / KEY_FILENAME
    if path.is_file() and path.read_text().strip() == key:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{KEY_FILENAME}.{os.getpid()}")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(key)
    os.replace(partial, path)
