"""The `rftlab` sweeper (conf/config.yaml selects it with `override hydra/sweeper: rftlab`).

Hydra's basic sweeper, minus its up-front pass that composes every point only to check that it composes: rftlab's
task composes and validates every point before anything is submitted, so that pass would compose each point twice.
Hydra only instantiates sweepers from the `hydra_plugins` package, hence this module's home.
"""

from __future__ import annotations

from collections.abc import Sequence

from hydra.core.config_store import ConfigStore

from rftlab.launch.compose import basic_sweeper


class PlanningSweeper(basic_sweeper.BasicSweeper):
    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        return None


ConfigStore.instance().store(
    group="hydra/sweeper",
    name="rftlab",
    node={"_target_": f"{__name__}.PlanningSweeper", "max_batch_size": None, "params": None},
    provider="rftlab",
)
