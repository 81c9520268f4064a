"""A ready client for a backend: the local server started when needed, credentials read at this moment."""

from __future__ import annotations

from dataclasses import dataclass

from rftlab.fireworks.client import FireworksClient
from rftlab.fireworks.credentials import CredentialsError, auth_ini_path, resolve_credentials
from rftlab.fireworks.redact import register_secret
from rftlab.runs.records import RunRecord


@dataclass(frozen=True)
class Backend:
    kind: str  # local | fireworks
    base_url: str
    account_id: str
    profile: str | None

    @classmethod
    def of_record(cls, record: RunRecord) -> Backend:
        backend = record.meta.get("backend") or {}
        if not backend.get("base_url") or not backend.get("account_id"):
            raise ValueError(f"{record.path}/meta.json names no backend; is this an rftlab run folder?")
        return cls(
            backend.get("kind", "fireworks"),
            backend["base_url"],
            backend["account_id"],
            backend.get("profile"),
        )


def connect(backend: Backend) -> FireworksClient:
    """The local backend is started in the background if nothing answers; its own key (the auth.ini profile its
    first start wrote) wins over a hosted key in `FIREWORKS_API_KEY`."""
    if backend.kind == "local":
        from rftlab.server.daemon import ensure_local_server

        ensure_local_server(backend.base_url)
    try:
        credentials = resolve_credentials(
            backend.profile, backend.account_id, prefer_env=backend.kind == "fireworks"
        )
    except CredentialsError as error:
        if backend.kind != "local":
            raise
        raise CredentialsError(
            f"the local backend at {backend.base_url} is running, but {auth_ini_path(backend.profile)} holds no "
            "key for it (it was started under another HOME, or the profile was removed since). Restart it: "
            "`rftlab serve --stop` (as the user that started it), then launch again; or use another port: "
            "backend.base_url=http://127.0.0.1:PORT"
        ) from error
    register_secret(credentials.api_key)
    return FireworksClient(backend.base_url, credentials.api_key, backend.account_id)


class Clients:
    """One client per backend, shared by the runs of a launch or a sweep folder."""

    def __init__(self) -> None:
        self._clients: dict[Backend, FireworksClient] = {}

    def get(self, backend: Backend) -> FireworksClient:
        if backend not in self._clients:
            self._clients[backend] = connect(backend)
        return self._clients[backend]

    def for_record(self, record: RunRecord) -> FireworksClient:
        return self.get(Backend.of_record(record))

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    def __enter__(self) -> Clients:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
