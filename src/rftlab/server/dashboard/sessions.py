"""Dashboard logins: an API key typed into the login form opens a session; the browser holds a random token in an
HttpOnly, SameSite=Strict cookie and the database holds only its SHA-256."""

from __future__ import annotations

import secrets
import time

from sqlalchemy import delete

from rftlab.server.accounts import hash_key
from rftlab.server.store import DashboardSession, Store

SESSION_COOKIE = "rftlab_session"
SESSION_TTL_S = 7 * 24 * 3600


def open_session(store: Store, account_id: str) -> str:
    """A new session for `account_id`; the token is returned once (for the cookie) and stored hashed."""
    token = secrets.token_urlsafe(32)
    with store.session() as session:
        session.execute(delete(DashboardSession).where(DashboardSession.expires_at < time.time()))
        session.add(
            DashboardSession(
                token_hash=hash_key(token), account_id=account_id, expires_at=time.time() + SESSION_TTL_S
            )
        )
    return token


def account_for_session(store: Store, token: str | None) -> str | None:
    if not token:
        return None
    with store.reading() as session:
        row = session.get(DashboardSession, hash_key(token))
        return row.account_id if row is not None and row.expires_at > time.time() else None


def close_session(store: Store, token: str | None) -> None:
    if token:
        with store.session() as session:
            session.execute(delete(DashboardSession).where(DashboardSession.token_hash == hash_key(token)))
