"""Launcher overhead: a 100-point dry-run sweep through `rftlab launch` beside Hydra's plain multirun of a no-op
task over the same config tree and the same 100 points, in one invocation.

Both run as fresh processes (imports included) in the same scratch folder, alternating, several times; the figure
is the ratio of the medians. rftlab's side composes, validates, renders and records every point (config.yaml,
request.json, meta.json per job); Hydra's side composes every point and writes Hydra's own per-job files
(.hydra/ and the job log) with Hydra's basic sweeper, which composes every point twice (once to check it, once
to run it), as a plain Hydra app does. rftlab's sweeper skips that check pass (its task composes and validates
every point before anything is submitted) and writes no .hydra/ copies, which is where its margin comes from.
A third, informational run gives the no-op task rftlab's own Hydra settings, isolating what rftlab adds per point.

    python bench/launcher.py [--repeats 3]
Last line: `launcher_overhead_ratio: X` (rftlab wall time / Hydra's); goal X <= 1.0.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LEARNING_RATES = [f"{1e-4 * (i + 1):.1e}" for i in range(10)]
TEMPERATURES = [f"{0.5 + 0.1 * i:.1f}" for i in range(10)]
POINTS = [
    "-m",
    "training.learning_rate=" + ",".join(LEARNING_RATES),
    "sampling.temperature=" + ",".join(TEMPERATURES),
]

RFTLAB = "from rftlab.cli import main; raise SystemExit(main())"
# A plain Hydra app: the same conf/ and resolvers, a task that does nothing, Hydra's standard sweeper and outputs.
HYDRA_NOOP = """
import hydra
from rftlab.launch.compose import register
from rftlab.paths import conf_dir

register()

@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")
def noop(cfg):
    pass

noop()
"""
HYDRA_STANDARD = [
    "hydra/sweeper=basic",
    "hydra/job_logging=default",
    "hydra/hydra_logging=default",
    "hydra.output_subdir=.hydra",
    "hydra.sweep.dir=multirun/${now:%Y-%m-%d}/${now:%H-%M-%S-%f}",
    "hydra.sweep.subdir=${hydra.job.num}",
]


def timed(command: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{command[:3]} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rftlab_cmd = [sys.executable, "-c", RFTLAB, "launch", *POINTS, "dry_run=true", "output=json"]
    hydra_cmd = [sys.executable, "-c", HYDRA_NOOP, *POINTS, *HYDRA_STANDARD]
    # the same no-op task with rftlab's Hydra settings (one composition per point, no Hydra output files):
    # what rftlab itself adds on top of composing
    lean_cmd = [sys.executable, "-c", HYDRA_NOOP, *POINTS]
    rftlab_s, hydra_s, lean_s = [], [], []
    with tempfile.TemporaryDirectory(prefix="rftlab-bench-") as scratch:
        cwd = Path(scratch)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        for _ in range(args.repeats):
            hydra_s.append(timed(hydra_cmd, cwd))
            rftlab_s.append(timed(rftlab_cmd, cwd))
            lean_s.append(timed(lean_cmd, cwd))
        recorded = len(list(cwd.glob("outputs/*/*/*/request.json")))
    expected = args.repeats * len(LEARNING_RATES) * len(TEMPERATURES)
    if recorded != expected:
        raise SystemExit(f"expected {expected} recorded requests, found {recorded}")
    rftlab_median, hydra_median = statistics.median(rftlab_s), statistics.median(hydra_s)
    points = len(LEARNING_RATES) * len(TEMPERATURES)
    print(f"points per sweep: {points}; repeats: {args.repeats}; cpu count: {os.cpu_count()}")
    print(
        f"hydra no-op multirun: median {hydra_median:.2f} s ({1000 * hydra_median / points:.1f} ms/point) {hydra_s}"
    )
    print(
        f"rftlab dry-run sweep: median {rftlab_median:.2f} s ({1000 * rftlab_median / points:.1f} ms/point) {rftlab_s}"
    )
    lean_median = statistics.median(lean_s)
    print(f"hydra no-op with rftlab's Hydra settings: median {lean_median:.2f} s {lean_s}")
    print(
        f"rftlab's own work per point (plan + record): {1000 * (rftlab_median - lean_median) / points:.1f} ms"
    )
    print(f"launcher_overhead_ratio: {rftlab_median / hydra_median:.3f}")


if __name__ == "__main__":
    main()
