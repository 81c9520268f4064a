"""Deterministic resource ids: a readable slug plus a short content hash.

Fireworks ids are lowercase letters, digits and '-', start with a letter and are at most 63 characters long.
The same inputs always give the same id, so a repeated launch or upload finds what the first one created.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

MAX_ID_LEN = 63
HASH_LEN = 10


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def jsonl_head(path: Path, rows: int) -> bytes:
    """The first `rows` non-blank lines of a JSONL file, each ending with a newline; stops reading there."""
    lines: list[bytes] = []
    with path.open("rb") as stream:
        for line in stream:
            if line.strip():
                lines.append(line if line.endswith(b"\n") else line + b"\n")
                if len(lines) == rows:
                    break
    return b"".join(lines)


def json_sha256(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def slugify(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    if not slug or not slug[0].isalpha():
        slug = f"r-{slug}".rstrip("-")
    return slug


def with_hash(slug_source: str, sha256_hex: str) -> str:
    """`<slug>-<hash>`, the slug cut so the whole id fits in 63 characters."""
    suffix = sha256_hex[:HASH_LEN]
    slug = slugify(slug_source)[: MAX_ID_LEN - HASH_LEN - 1].rstrip("-")
    return f"{slug}-{suffix}"


def resource_tail(name: str) -> str:
    """`qwen3-8b` from `accounts/fireworks/models/qwen3-8b`; a bare id unchanged."""
    return name.rstrip("/").rsplit("/", 1)[-1]


def resource_name(account_id: str, collection: str, id_or_name: str) -> str:
    """A full resource name: a bare id goes into the backend's account, a full name is kept."""
    if id_or_name.startswith("accounts/"):
        return id_or_name
    return f"accounts/{account_id}/{collection}/{id_or_name}"
