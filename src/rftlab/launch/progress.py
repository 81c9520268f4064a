"""What a submit shows on stderr while it waits: an upload's progress bar, an evaluator's build. Nothing when quiet.
On a terminal one line is redrawn; elsewhere (a CI log) a line per tenth of an upload and a line per state change,
then one every `LOG_EVERY_S`."""

from __future__ import annotations

import sys
import time
from typing import TextIO

BAR_WIDTH = 30
LOG_EVERY_S = 30.0


class Progress:
    def __init__(self, quiet: bool, stream: TextIO | None = None):
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self._last_line = ""
        self._last_time = 0.0

    def upload(self, label: str):
        """A callback for `(sent, total)` that draws `label [#####.....] 52% 80/153 MB`."""
        shown = -1

        def update(sent: int, total: int) -> None:
            nonlocal shown
            tenth = sent * 10 // max(total, 1)
            if not self.live and tenth == shown:
                return
            shown = tenth
            filled = BAR_WIDTH * sent // max(total, 1)
            bar = "#" * filled + "." * (BAR_WIDTH - filled)
            line = (
                f"uploading {label} [{bar}] {100 * sent // max(total, 1):3d}% {sent >> 20}/{total >> 20} MB"
            )
            self._show(line, done=sent >= total)

        return update

    def waiting(self, what: str, state: str, elapsed_s: float) -> None:
        """`what` is still `state` after `elapsed_s` seconds (an evaluator BUILDING, a dataset UPLOADING)."""
        line = f"{what}: {state} ({elapsed_s:.0f} s)"
        changed = line.rsplit(" (", 1)[0] != self._last_line.rsplit(" (", 1)[0]
        if self.live or changed or time.monotonic() - self._last_time >= LOG_EVERY_S:
            self._show(line, done=False)

    def finished(self, line: str) -> None:
        self._show(line, done=True)

    def _show(self, line: str, done: bool) -> None:
        if self.quiet:
            return
        self._last_line, self._last_time = line, time.monotonic()
        if self.live:
            self.stream.write("\r\033[K" + line + ("\n" if done else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
