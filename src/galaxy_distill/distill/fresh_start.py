"""A distillation that fails before its first checkpoint leaves no run directory behind to block the retry."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from galaxy_distill import distributed
from galaxy_distill.rundir import RunDir


@contextmanager
def removed_if_start_fails(run_dir: Path) -> Iterator[bool]:
    """Run a distillation into run_dir; if it fails before its first checkpoint, remove what it wrote.

    A failure that left a record of its numerical faults (stages.json) keeps the directory for the user to read.
    A leftover of an earlier failed start (no checkpoint) is cleared first, so the retry may change settings;
    yields whether that happened. A directory that holds other things is never touched.
    """
    run = RunDir(run_dir)
    cleared = distributed.is_main() and run.is_unstarted()
    if cleared:
        shutil.rmtree(run_dir)
    existed = run_dir.exists()
    try:
        yield cleared
    except BaseException:
        if not existed and distributed.is_main() and run.is_unstarted() and not run.stages.is_file():
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
