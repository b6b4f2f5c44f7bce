"""A distillation that fails before its first checkpoint leaves no run directory behind to block the retry."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from galaxy_distill import distributed
from galaxy_distill.distill.checkpoint import has_checkpoint

STARTED_RUN_FILES = {"settings.json", "settings.yaml", "snapshots", "stages.json", "tensorboard"}
"""What a distillation writes before its first checkpoint; a directory of these alone holds no work worth keeping."""


def is_unstarted_run(run_dir: Path) -> bool:
    """Whether run_dir holds only what a run that never reached a checkpoint writes."""
    return (run_dir.is_dir() and (run_dir / "settings.json").is_file() and not has_checkpoint(run_dir)
            and all(entry.name in STARTED_RUN_FILES for entry in run_dir.iterdir()))


@contextmanager
def removed_if_start_fails(run_dir: Path) -> Iterator[bool]:
    """Run a distillation into run_dir; if it fails before its first checkpoint, remove what it wrote.

    A failure that left a record of its numerical faults (stages.json) keeps the directory for the user to read.
    A leftover of an earlier failed start (no checkpoint) is cleared first, so the retry may change settings;
    yields whether that happened. A directory that holds other things is never touched.
    """
    cleared = distributed.is_main() and is_unstarted_run(run_dir)
    if cleared:
        shutil.rmtree(run_dir)
    existed = run_dir.exists()
    try:
        yield cleared
    except BaseException:
        if not existed and distributed.is_main() and is_unstarted_run(run_dir) and not (run_dir / "stages.json").is_file():
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
