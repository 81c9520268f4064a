"""Where rftlab's shipped files and per-user state live.

`conf/` and `sweeps/` sit at the repository root and are copied into the wheel as `rftlab/conf` and
`rftlab/sweeps` (pyproject's force-include), so one source serves a checkout and an installed package.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
ASSETS_DIR = PACKAGE_DIR / "assets"


def _shipped(name: str) -> Path:
    inside_wheel = PACKAGE_DIR / name
    if inside_wheel.is_dir():
        return inside_wheel
    return PACKAGE_DIR.parents[1] / name


def conf_dir() -> Path:
    return _shipped("conf")


def sweeps_dir() -> Path:
    return _shipped("sweeps")


def state_dir() -> Path:
    """The local backend's state (database, uploads, checkpoints, models): `$RFTLAB_HOME` or ~/.rftlab."""
    return Path(os.environ.get("RFTLAB_HOME") or Path.home() / ".rftlab").expanduser()


def fireworks_dir() -> Path:
    """Where firectl-style auth profiles live: ~/.fireworks."""
    return Path.home() / ".fireworks"
