"""`rftlab launch` as a Hydra app: compose every point of a launch (one, or many with -m / sweeps=NAME) into plans.

Hydra runs the task once per point; the task only plans (validate, render, record the plan) and collects. Submission
happens after Hydra returns (`rftlab.launch.run`), so a sweep is validated completely before its first request.

Two extensions are registered here:
- the `sweeps` config group, read from the `sweeps/` folder (a config source and a search path entry), so
  `rftlab launch sweeps=NAME` runs `sweeps/NAME.yaml`;
- resolvers `${rftlab.asset:REL}` (a file bundled with the package, wherever it is installed) and
  `${rftlab.launch_dir:BASE}` (a new folder under BASE for this launch, never shared with another launch).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from hydra import version

# Hydra's public API has no way to add a config source, to reuse its basic sweeper, or to run an app on an argv
# list instead of sys.argv: those three come from hydra._internal, here and nowhere else (hydra-core is pinned
# below 1.4 in pyproject.toml for that reason). Hydra's plugin scan re-executes `basic_sweeper`, so the sweeper
# plugin reads the class off the module when it is defined, never a reference taken earlier.
from hydra._internal.core_plugins import basic_sweeper
from hydra._internal.core_plugins.file_config_source import FileConfigSource
from hydra._internal.utils import _run_hydra, get_args_parser
from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.object_type import ObjectType
from hydra.core.plugins import Plugins
from hydra.plugins.config_source import ConfigLoadError, ConfigResult
from hydra.plugins.search_path_plugin import SearchPathPlugin
from omegaconf import DictConfig, OmegaConf

if TYPE_CHECKING:
    from rftlab.launch.plan import Plan

from rftlab.paths import ASSETS_DIR, conf_dir, sweeps_dir
from rftlab.runs.records import new_launch_dir

__all__ = ["Composed", "basic_sweeper", "compose", "register"]

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


def asset_path(relative: str) -> str:
    return str(ASSETS_DIR / relative)


def register(launch_dirs: dict[str, str] | None = None) -> None:
    """The sweeps group and the resolvers; `launch_dirs` memoises this launch's folder per base (Hydra resolves
    the run and sweep dirs more than once)."""
    claimed = {} if launch_dirs is None else launch_dirs

    def launch_dir(base: str = "outputs") -> str:
        if base not in claimed:
            claimed[base] = str(new_launch_dir(Path(base)))
        return claimed[base]

    OmegaConf.register_new_resolver("rftlab.asset", asset_path, replace=True)
    OmegaConf.register_new_resolver("rftlab.launch_dir", launch_dir, replace=True)
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


def _plan_point(cfg: DictConfig, composed: Composed) -> None:
    from hydra.core.hydra_config import HydraConfig
    from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

    from rftlab.launch.plan import build_plan
    from rftlab.launch.spec import SpecError

    hydra_cfg = HydraConfig.get()
    overrides = [str(o) for o in OmegaConf.to_container(hydra_cfg.overrides.task, resolve=False)]  # as typed
    composed.launch_dir = Path(hydra_cfg.runtime.output_dir)
    composed.cwd = Path(hydra_cfg.runtime.cwd)
    composed.multirun = str(hydra_cfg.mode) == "RunMode.MULTIRUN"
    index = len(composed.plans) + len(composed.invalid)
    try:
        config = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
        composed.plans.append(build_plan(config, composed.cwd, overrides))  # type: ignore[arg-type]
    except SpecError as err:
        composed.invalid.append(InvalidPoint(index, overrides, [str(p) for p in err.problems]))
    except MissingMandatoryValue as err:
        problem = f"{err.full_key}: required (the config says ???); set it, e.g. {err.full_key}=VALUE"
        composed.invalid.append(InvalidPoint(index, overrides, [problem]))
    except InterpolationResolutionError as err:
        composed.invalid.append(
            InvalidPoint(index, overrides, [f"{err.full_key}: {str(err.msg).splitlines()[0]}"])
        )


def compose(argv: list[str]) -> Composed:
    """Run Hydra over `argv` (overrides, -m, --help, --cfg ...); returns the planned points, if any.

    Hydra prints its own errors (an unknown group option lists the available ones) and exits with status 1.
    """
    from hydra.core.global_hydra import GlobalHydra

    version.setbase("1.3")
    composed = Composed()
    register({})
    parser = get_args_parser()
    # argparse cannot take overrides on both sides of -m; let users put it anywhere
    flags = [arg for arg in argv if arg in ("-m", "--multirun")]
    args = parser.parse_args([*flags, *(arg for arg in argv if arg not in flags)])
    GlobalHydra.instance().clear()
    _run_hydra(
        args=args,
        args_parser=parser,
        task_function=lambda cfg: _plan_point(cfg, composed),
        config_path=str(conf_dir()),
        config_name="config",
    )
    return composed
