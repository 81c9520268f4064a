"""Fireworks credentials: `FIREWORKS_API_KEY` or an auth.ini profile, read at submit time, never stored.

auth.ini is firectl's INI-like file of `key = value` lines (`api_key`, `account_id`), with no section header or
under `[fireworks]`. The default profile is ~/.fireworks/auth.ini; a named one ~/.fireworks/profiles/<name>/auth.ini.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from rftlab.paths import fireworks_dir


@dataclass(frozen=True)
class Credentials:
    api_key: str
    account_id: str | None

    def __repr__(self) -> str:  # keeps the key out of tracebacks and logs
        return f"Credentials(api_key='***', account_id={self.account_id!r})"


class CredentialsError(RuntimeError):
    pass


def auth_ini_path(profile: str | None) -> Path:
    if profile:
        return fireworks_dir() / "profiles" / profile / "auth.ini"
    return fireworks_dir() / "auth.ini"


def read_auth_ini(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")) or "=" not in line:
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip().strip('"').strip("'")
    return values


def write_auth_ini(path: Path, api_key: str, account_id: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.write_text(f"api_key = {api_key}\naccount_id = {account_id}\n")
    path.chmod(0o600)


def resolve_credentials(profile: str | None, account_id: str | None, prefer_env: bool = True) -> Credentials:
    """The API key from `FIREWORKS_API_KEY`, else the profile's auth.ini (the other way round with
    `prefer_env=False`, which the local backend uses so a hosted key in the environment does not shadow the
    key its server wrote); the account from config, then the profile, then `FIREWORKS_ACCOUNT_ID`."""
    ini = read_auth_ini(auth_ini_path(profile))
    env_key = os.environ.get("FIREWORKS_API_KEY")
    api_key = (env_key or ini.get("api_key")) if prefer_env else (ini.get("api_key") or env_key)
    if not api_key:
        raise CredentialsError(
            f"no Fireworks API key: set FIREWORKS_API_KEY or write api_key to {auth_ini_path(profile)}"
            + (" (choose another with backend.profile=NAME)" if not profile else "")
        )
    account = account_id or ini.get("account_id") or os.environ.get("FIREWORKS_ACCOUNT_ID")
    return Credentials(api_key=api_key, account_id=account)
