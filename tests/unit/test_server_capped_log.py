"""A child's output through a capped log: however much it prints, the log and its one rotation stay bounded and
hold the newest output."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from rftlab.server.capped_log import capped_log_pipe


def test_a_flood_of_output_keeps_the_log_bounded_and_fresh(tmp_path):
    log = tmp_path / "worker.log"
    output = capped_log_pipe(log, 100_000)
    script = "import sys\nfor i in range(20000): sys.stdout.write(f'line {i:06d} ' + 'x' * 40 + '\\n')\n"
    child = subprocess.Popen([sys.executable, "-c", script], stdout=output, stderr=output)
    os.close(output)
    assert child.wait(timeout=60) == 0
    rotated = tmp_path / "worker.log.1"
    deadline = time.monotonic() + 10
    while "line 019999" not in (log.read_text() if log.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.05)  # the copying thread is still writing (or rotating)
    assert log.stat().st_size <= 100_000 and rotated.stat().st_size <= 100_000
    assert log.read_text().rstrip().endswith("line 019999 " + "x" * 40)
    assert "line 000000" not in log.read_text() + rotated.read_text()
