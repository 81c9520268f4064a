"""Keep secrets out of everything rftlab prints or writes.

Two nets: values under secret-named keys (`apiKey`, `api_key`, `Authorization`) are masked wherever they sit in a
structure, and any occurrence of a known secret value (the API keys in the environment, plus keys read from an
auth.ini at submit time) is masked inside any string.
"""

from __future__ import annotations

import os
from typing import Any

REDACTED = "***"
SECRET_ENV_VARS = ("FIREWORKS_API_KEY", "WANDB_API_KEY")
SECRET_KEYS = frozenset({"apikey", "api_key", "wandb_api_key", "authorization"})
_MIN_SECRET_LEN = 4  # shorter strings would mask ordinary words

_registered: set[str] = set()


def register_secret(value: str | None) -> None:
    """Mask `value` from now on (e.g. a key read from auth.ini, which is not in the environment)."""
    if value and len(value) >= _MIN_SECRET_LEN:
        _registered.add(value)


def known_secrets() -> list[str]:
    from_env = {os.environ.get(name) or "" for name in SECRET_ENV_VARS}
    secrets = {s for s in from_env | _registered if len(s) >= _MIN_SECRET_LEN}
    return sorted(
        secrets, key=len, reverse=True
    )  # longest first, so a key containing another is masked whole


def redact_text(text: str) -> str:
    for secret in known_secrets():
        text = text.replace(secret, REDACTED)
    return text


def redact(value: Any) -> Any:
    """A copy of `value` (JSON-like: dicts, lists, scalars) with secrets masked."""
    secrets = known_secrets()

    def walk(item: Any) -> Any:
        if isinstance(item, dict):
            return {
                key: (REDACTED if str(key).lower() in SECRET_KEYS and sub is not None else walk(sub))
                for key, sub in item.items()
            }
        if isinstance(item, (list, tuple)):
            return [walk(sub) for sub in item]
        if isinstance(item, str):
            for secret in secrets:
                item = item.replace(secret, REDACTED)
            return item
        return item

    return walk(value)
