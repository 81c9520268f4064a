"""`rftlab launch` as a Hydra app: compose every point of a launch (one, or many with -m / sweeps=NAME) into plans.

Hydra runs the task once per point; the task only plans (validate, render, record the plan) and collects. Submission
happens after Hydra returns (`rftlab.launch`), so a sweep is validated completely before its first request.

Two extensions are registered here:
- the `sweeps` config group, read from the `sweeps/` folder (a config source and a search path entry), so
  `rftlab launch sweeps=NAME` runs `sweeps/NAME.yaml`;
- resolvers `${rftlab.asset:REL}` (a file bundled with the package, wherever it is installed) and
  `${rftlab.launch_dir:BASE}` (a new folder under BASE for this launch, never shared with another launch).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from hydra._internal.core_plugins.file_config_source import FileConfigSource
from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.object_type import ObjectType
from hydra.core.plugins import Plugins
from hydra.plugins.config_source import ConfigLoadError, ConfigResult
from hydra.plugins.search_path_plugin import SearchPathPlugin
from omegaconf import DictConfig, OmegaConf

if TYPE_CHECKING:
    from rftlab.plan import Plan

from rftlab.paths import ASSETS_DIR, conf_dir, sweeps_dir

SWEEPS_GROUP = "sweeps"


class SweepsConfigSource(FileConfigSource):
    """Exposes `sweeps/*.yaml` as the config group `sweeps` (flat), and nothing else."""

    def __init__(self, provider: str, path: str) -> None:
        super().__init__(provider=provider, path=str(sweeps_dir()))

    @staticmethod
    def scheme() -> str:
        return "rftlab-sweeps"

    @staticmethod
    def _inner(config_path: str) -> str | None:
        if config_path == SWEEPS_GROUP:
            return ""
        if config_path.startswith(SWEEPS_GROUP + "/"):
            return config_path[len(SWEEPS_GROUP) + 1 :]
        return None

    def load_config(self, config_path: str) -> ConfigResult:
        inner = self._inner(config_path)
        if inner is None:
            raise ConfigLoadError(f"Config not found : {config_path}")
        return super().load_config(inner)

    def available(self) -> bool:
        return sweeps_dir().is_dir()

    def is_group(self, config_path: str) -> bool:
        return config_path in ("", SWEEPS_GROUP)

    def is_config(self, config_path: str) -> bool:
        inner = self._inner(config_path)
        return bool(inner) and super().is_config(inner)

    def list(self, config_path: str, results_filter: ObjectType | None) -> list[str]:
        if config_path == "":
            wanted = results_filter in (None, ObjectType.GROUP)
            return [SWEEPS_GROUP] if wanted and self.available() else []
        if config_path != SWEEPS_GROUP or results_filter not in (None, ObjectType.CONFIG):
            return []
        return sorted(path.stem for path in sweeps_dir().glob("*.yaml"))


class SweepsSearchPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(provider="rftlab-sweeps", path=f"{SweepsConfigSource.scheme()}://")


_claimed_launch_dirs: dict[str, str] = {}


def claim_launch_dir(base: str = "outputs") -> str:
    """`BASE/<date>/<time with microseconds>`, created here so that no other launch can take it; stable for the
    rest of this launch (Hydra resolves the run and sweep dirs more than once)."""
    if base not in _claimed_launch_dirs:
        stamp = datetime.now()
        day = Path(base) / stamp.strftime("%Y-%m-%d")
        day.mkdir(parents=True, exist_ok=True)
        name, attempt = stamp.strftime("%H-%M-%S-%f"), 1
        while True:
            candidate = day / (name if attempt == 1 else f"{name}-{attempt}")
            try:
                candidate.mkdir()
                break
            except FileExistsError:
                attempt += 1
        _claimed_launch_dirs[base] = str(candidate)
    return _claimed_launch_dirs[base]


def new_launch() -> None:
    """Forget the launch folder of a previous launch in this process."""
    _claimed_launch_dirs.clear()


def asset_path(relative: str) -> str:
    return str(ASSETS_DIR / relative)


def register() -> None:
    OmegaConf.register_new_resolver("rftlab.asset", asset_path, replace=True)
    OmegaConf.register_new_resolver("rftlab.launch_dir", claim_launch_dir, replace=True)
    Plugins.instance().register(SweepsConfigSource)
    Plugins.instance().register(SweepsSearchPath)


@dataclass
class InvalidPoint:
    index: int
    overrides: list[str]
    problems: list[str]


@dataclass
class Composed:
    """What Hydra's runs of the task produced: the valid plans and the points that failed validation."""

    launch_dir: Path | None = None
    cwd: Path | None = None
    plans: list[Plan] = field(default_factory=list)
    invalid: list[InvalidPoint] = field(default_factory=list)
    multirun: bool = False


_composed = Composed()


def _task(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig
    from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

    from rftlab.plan import build_plan
    from rftlab.spec import SpecError

    hydra_cfg = HydraConfig.get()
    overrides = [str(o) for o in OmegaConf.to_container(hydra_cfg.overrides.task, resolve=False)]  # as typed
    _composed.launch_dir = Path(hydra_cfg.runtime.output_dir)
    _composed.cwd = Path(hydra_cfg.runtime.cwd)
    _composed.multirun = str(hydra_cfg.mode) == "RunMode.MULTIRUN"
    index = len(_composed.plans) + len(_composed.invalid)
    try:
        config = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
        _composed.plans.append(build_plan(config, _composed.cwd, overrides))  # type: ignore[arg-type]
    except SpecError as err:
        _composed.invalid.append(InvalidPoint(index, overrides, [str(p) for p in err.problems]))
    except MissingMandatoryValue as err:
        problem = f"{err.full_key}: required (the config says ???); set it, e.g. {err.full_key}=VALUE"
        _composed.invalid.append(InvalidPoint(index, overrides, [problem]))
    except InterpolationResolutionError as err:
        _composed.invalid.append(
            InvalidPoint(index, overrides, [f"{err.full_key}: {str(err.msg).splitlines()[0]}"])
        )


def compose(argv: list[str]) -> Composed:
    """Run Hydra over `argv` (overrides, -m, --help, --cfg ...); returns the planned points, if any.

    Hydra prints its own errors (an unknown group option lists the available ones) and exits with status 1.
    """
    import hydra

    global _composed
    _composed = Composed()
    new_launch()
    register()
    app = hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")(_task)
    saved_argv = sys.argv
    # argparse cannot take overrides on both sides of -m; let users put it anywhere
    flags = [arg for arg in argv if arg in ("-m", "--multirun")]
    sys.argv = ["rftlab launch", *flags, *(arg for arg in argv if arg not in flags)]
    try:
        app()
    finally:
        sys.argv = saved_argv
    return _composed
