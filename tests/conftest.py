"""Shared fixtures: every test runs with a temporary HOME and state dir, offline hubs, and no real secrets."""

from __future__ import annotations

import importlib.util
import os

import pytest

FIREWORKS_KEY_MARKER = "fw-marker-SECRET-4f1c9a"
WANDB_KEY_MARKER = "wandb-marker-SECRET-77ab03"
REQUIRE_RAY_ENV = "RFTLAB_REQUIRE_RAY"


def pytest_configure(config: pytest.Config) -> None:
    """With RFTLAB_REQUIRE_RAY=1 (CI, `make test-slow`) a missing Ray stops the run, where the Ray executor's tests
    would otherwise skip."""
    if os.environ.get(REQUIRE_RAY_ENV) == "1" and importlib.util.find_spec("ray") is None:
        raise pytest.UsageError(
            f"{REQUIRE_RAY_ENV}=1 but Ray is not installed: `make setup-ray` (pip install -e '.[local,dev,ray]')"
        )


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("RFTLAB_HOME", str(home / ".rftlab"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("WANDB_MODE", "offline")
    for name in (
        "FIREWORKS_API_KEY",
        "FIREWORKS_ACCOUNT_ID",
        "WANDB_API_KEY",
        "WANDB_PROJECT",
        "WANDB_ENTITY",
    ):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture
def marker_secrets(monkeypatch):
    """API keys set to recognisable marker values, to prove they never reach a file or the console."""
    monkeypatch.setenv("FIREWORKS_API_KEY", FIREWORKS_KEY_MARKER)
    monkeypatch.setenv("WANDB_API_KEY", WANDB_KEY_MARKER)
    return (FIREWORKS_KEY_MARKER, WANDB_KEY_MARKER)


@pytest.fixture
def compose_config():
    """Compose conf/ with Hydra's compose API (as `rftlab launch` would, minus the run) into a plain dict."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from rftlab.launch.compose import register
    from rftlab.paths import conf_dir

    def _compose(overrides: list[str] | tuple[str, ...] = ()) -> dict:
        register()
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            cfg = compose(config_name="config", overrides=list(overrides))
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)

    return _compose


@pytest.fixture
def packages(tmp_path, monkeypatch):
    """A local folder that uv finds packages in (see package_files.py to fill it), with no index and no network."""
    folder = tmp_path / "packages"
    folder.mkdir()
    monkeypatch.setenv("UV_FIND_LINKS", str(folder))
    monkeypatch.setenv("UV_OFFLINE", "1")
    return folder
