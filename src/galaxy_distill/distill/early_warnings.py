"""Warnings a distillation gives while it runs, when what it sees means the prototypes will come out as noise."""

from __future__ import annotations

import sys
from collections import deque

from tqdm.auto import tqdm

HIGH_LOSS = 1.0
"""A matching loss above 1 means the student ends further from the expert's target than the expert's start was."""
HIGH_LOSS_WINDOW = 50


class MatchingLossWatch:
    """Warns once when the matching loss has stayed above HIGH_LOSS for HIGH_LOSS_WINDOW iterations in a row."""

    def __init__(self, window: int = HIGH_LOSS_WINDOW) -> None:
        self.recent: deque[float] = deque(maxlen=window)
        self.warned = False

    def observe(self, iteration: int, loss: float) -> str | None:
        """Record one iteration's loss; returns (and prints) the warning the first time it is due."""
        self.recent.append(loss)
        if self.warned or len(self.recent) < self.recent.maxlen or min(self.recent) <= HIGH_LOSS:
            return None
        self.warned = True
        message = (f"warning: iteration {iteration}: the matching loss has stayed above {HIGH_LOSS:g} for "
                   f"{len(self.recent)} iterations (last {loss:.3g}): the prototypes are not learning the experts' "
                   "trajectories. Usually the experts took too few steps per epoch (train them again with a smaller "
                   "--batch-size, or leave it unset); otherwise lower --lr-init or --syn-steps")
        tqdm.write(message, file=sys.stderr)
        return message
