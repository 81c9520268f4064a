"""Mistyped override keys (`trainng.epochs=3`, `modle=qwen`) answered with the closest valid names before Hydra
sees them: Hydra's own answer ("Key 'trainng' is not in struct") names no alternative."""

from __future__ import annotations

import difflib
from functools import lru_cache

import yaml

from rftlab.paths import conf_dir

HELP_HINT = "rftlab launch --help lists every group, option and key"


@lru_cache(maxsize=1)
def known_keys() -> dict[str, frozenset[str]]:
    """Top-level name -> the keys allowed under it: a config group's keys (over all its options), or nothing
    for a plain top-level key."""
    root = conf_dir()
    names: dict[str, frozenset[str]] = {"sweeps": frozenset(), "hydra": frozenset()}
    top = yaml.safe_load((root / "config.yaml").read_text()) or {}
    names.update({key: frozenset() for key in top if key not in ("defaults", "hydra")})
    for group in (path for path in root.iterdir() if path.is_dir()):
        keys: set[str] = set()
        for option in group.glob("*.yaml"):
            text = option.read_text()
            if "@package _global_" not in text:
                keys.update(key for key in (yaml.safe_load(text) or {}) if key != "defaults")
        names[group.name] = frozenset(keys)
    return names


def _suggest(word: str, choices: list[str], prefix: str = "", suffix: str = "") -> str:
    close = difflib.get_close_matches(word, choices, n=3, cutoff=0.6)
    return f"did you mean {' or '.join(repr(prefix + c + suffix) for c in close)}?" if close else ""


def problem(override: str) -> str | None:
    """Why `override` names no known key, with the closest names; None when it does (or cannot be judged)."""
    key = override.partition("=")[0]
    if not key or key.startswith(("+", "~")) or any(mark in key for mark in "/@"):
        return None  # additions, deletions and package overrides are Hydra's to judge
    names = known_keys()
    first, _, rest = key.partition(".")
    if first == "hydra":
        return None
    if first not in names:
        hint = _suggest(first, sorted(names), suffix=f".{rest}" if rest else "")
        return f"unknown key {key!r}" + (f": {hint}" if hint else "")
    sub = rest.partition(".")[0]
    if sub and names[first] and sub not in names[first]:
        hint = _suggest(sub, sorted(names[first]), prefix=f"{first}.")
        allowed = ", ".join(sorted(names[first]))
        return f"unknown key {key!r}: " + (hint or f"{first} has {allowed}")
    return None


def check(argv: list[str]) -> str | None:
    """One message for every mistyped override in `argv`, or None."""
    found = [p for arg in argv if not arg.startswith("-") and "=" in arg and (p := problem(arg))]
    if not found:
        return None
    return "rftlab launch: " + "\nrftlab launch: ".join(found) + f"\n({HELP_HINT})"
