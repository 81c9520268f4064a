"""Accounts and API keys. A key belongs to one account and is stored only as its SHA-256 digest (keys are 256-bit
random tokens, so a fast hash is enough: there is nothing to brute-force)."""

from __future__ import annotations

import hashlib
import re
import secrets

from rftlab.fireworks.credentials import auth_ini_path, read_auth_ini, write_auth_ini
from rftlab.server.store import Account, ApiKey, Store

LOCAL_ACCOUNT_ID = "local"
LOCAL_PROFILE = "rftlab-local"
KEY_PREFIX = "rftlab_"
ACCOUNT_ID_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,62}$")


def hash_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def account_for_key(store: Store, api_key: str) -> str | None:
    with store.reading() as session:
        row = session.get(ApiKey, hash_key(api_key))
        return row.account_id if row else None


def create_key(store: Store, account_id: str) -> str:
    """A new key for `account_id` (created if missing); returned once, stored hashed."""
    if not ACCOUNT_ID_PATTERN.match(account_id):
        raise ValueError(
            f"account id {account_id!r}: use lowercase letters, digits and '-', letter first, ≤ 63 chars"
        )
    api_key = KEY_PREFIX + secrets.token_urlsafe(32)
    with store.session() as session:
        if session.get(Account, account_id) is None:
            session.add(Account(account_id=account_id))
            session.flush()
        session.add(ApiKey(key_hash=hash_key(api_key), account_id=account_id))
    return api_key


def ensure_local_account(store: Store) -> None:
    """First start: create account `local` and a key, and write them to the `rftlab-local` auth.ini profile.
    Later starts keep a profile whose key still opens `local`, and mint a new key otherwise (a key cannot be
    recovered from its hash)."""
    profile = auth_ini_path(LOCAL_PROFILE)
    existing_key = read_auth_ini(profile).get("api_key")
    if existing_key and account_for_key(store, existing_key) == LOCAL_ACCOUNT_ID:
        return
    write_auth_ini(profile, create_key(store, LOCAL_ACCOUNT_ID), LOCAL_ACCOUNT_ID)
