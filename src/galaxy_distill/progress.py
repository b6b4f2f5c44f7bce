"""Progress bars on a terminal, and a plain line every few seconds otherwise (logs of CI, nohup, pipes)."""

from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm

LOG_INTERVAL_S = 5.0


class _LogLines(tqdm):
    """tqdm that writes each refresh as a line of its own: a log file gets readable lines, not carriage returns."""

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        if msg == "":  # tqdm clearing its bar: a log has nothing to clear
            return False
        self.fp.write((msg or self.__str__()).strip() + "\n")
        self.fp.flush()
        return True

    def clear(self, nolock: bool = False) -> None:
        """A log line stays: there is no bar to wipe before a message."""

    def refresh(self, nolock: bool = False, lock_args: Any = None) -> None:
        # tqdm.write redraws every bar after its message (nolock=True); in a log that would be a line per message.
        if not nolock:
            super().refresh(nolock=nolock, lock_args=lock_args)

    def close(self) -> None:
        shown = not self.disable and self.last_print_t >= self.start_t + self.delay
        if shown and self.n != self.last_print_n:
            self.display()  # the final count, once a log has shown any
        self.leave = False
        super().close()


def progress(iterable: Any = None, *, main_process: bool = True, **options: Any) -> tqdm:
    """A tqdm bar on a terminal; off a terminal a plain line every LOG_INTERVAL_S seconds; nothing off the main process."""
    if not main_process:
        return tqdm(iterable, disable=True, **options)
    if sys.stderr.isatty():
        return tqdm(iterable, **options)
    return _LogLines(iterable, mininterval=LOG_INTERVAL_S, miniters=1, delay=LOG_INTERVAL_S, file=sys.stderr, ascii=True,
                     **options)
