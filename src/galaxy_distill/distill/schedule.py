"""Which expert epoch to start matching from: MTT's fixed schedule and STM's self-adaptive one.

Both are small state machines with the same interface, so the distillation loop has a
single code path; their state is plain JSON for exact resumption.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass
class ScheduleEvent:
    iteration: int
    kind: str
    detail: dict[str, Any]


def pearson_with_index(series: list[float]) -> float:
    values = np.asarray(series, dtype=np.float64)
    index = np.arange(len(values), dtype=np.float64)
    if len(values) < 3 or values.std() == 0:
        return 0.0
    return float(np.corrcoef(index, values)[0, 1])


@dataclass
class FixedSchedule:
    """MTT: start epochs uniform in [0, max_start_epoch), pixel learning rate constant."""

    max_start_epoch: int
    iterations: int

    def start_epoch(self, iteration: int, rng: np.random.Generator) -> int:
        return int(rng.integers(0, self.max_start_epoch))

    def probe_epoch(self) -> int | None:
        return None

    @property
    def stage(self) -> int:
        return 0

    def pixel_lr_factor(self) -> float:
        return 1.0

    def observe(self, iteration: int, probe_loss: float | None) -> list[ScheduleEvent]:
        return []

    def finished(self, iteration: int) -> bool:
        return iteration >= self.iterations

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "mtt"}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


@dataclass
class SelfAdaptiveSchedule:
    """STM (Guan et al. 2023): grow the start-epoch pool when matching the next epoch clearly improves or worsens.

    The rule of the STM code (HaowenGuan/Galaxy-Dataset-Distillation, distill.py), decision for decision:
    start epochs cycle as `iteration % cap` (0-based iteration). Before each update the loop measures,
    without updating anything, the normalised loss of matching epoch `cap` -> `cap + M` (the probe).
    Whenever the probe series holds a multiple of `check_every` points, the Pearson correlation r of
    the series with its index is tested against the null spread s = 1/sqrt(n - 2): r < -lambda_decrease * s
    means the images already generalise to the next epoch, r > lambda_increase * s that they overfit the
    earlier ones (tested, as there, only at every other check); either way the series restarts and the
    pool grows (at `max_start_epoch` it only restarts). A series longer than `patience` at a check starts
    fine-tuning: probes stop, and on every iteration whose 0-based index is a multiple of `decay_every`
    the pixel learning rate is multiplied by `decay`; the run stops once that factor falls below
    `stop_factor` (or at `max_iterations`, a safety bound).
    """

    max_start_epoch: int
    max_iterations: int
    lambda_decrease: float = 5.0
    lambda_increase: float = 3.0
    check_every: int = 10
    patience: int = 1000
    decay: float = 0.8
    decay_every: int = 50
    stop_factor: float = 0.05
    cap: int = 1
    probe_series: list[float] = field(default_factory=list)
    fine_tune_since: int | None = None
    lr_factor: float = 1.0
    stopped: bool = False

    def start_epoch(self, iteration: int, rng: np.random.Generator) -> int:
        return iteration % self.cap

    def probe_epoch(self) -> int | None:
        return self.cap if self.fine_tune_since is None else None

    @property
    def stage(self) -> int:
        return self.cap - 1

    def pixel_lr_factor(self) -> float:
        return self.lr_factor

    def observe(self, iteration: int, probe_loss: float | None) -> list[ScheduleEvent]:
        """Record iteration `iteration` (1-based count of finished iterations) and the probe loss measured in it."""
        events: list[ScheduleEvent] = []
        if self.fine_tune_since is None and probe_loss is not None and math.isfinite(probe_loss):
            self.probe_series.append(probe_loss)
        n = len(self.probe_series)
        if self.fine_tune_since is None and n >= 3 and n % self.check_every == 0 and n > self.patience:
            self.fine_tune_since = iteration
            events.append(ScheduleEvent(iteration, "fine_tune", {"cap": self.cap, "points_without_growth": n}))
        if self.fine_tune_since is not None:
            if (iteration - 1) % self.decay_every == 0:
                self.lr_factor *= self.decay
                self.stopped = self.lr_factor < self.stop_factor
                if self.stopped:
                    events.append(ScheduleEvent(iteration, "stop", {"pixel_lr_factor": self.lr_factor}))
            return events
        if n < 3 or n % self.check_every:
            return events
        r = pearson_with_index(self.probe_series)
        spread = 1.0 / math.sqrt(n - 2)
        decreasing = r < -self.lambda_decrease * spread
        rising = r > self.lambda_increase * spread and n % (2 * self.check_every) != 0
        if decreasing or rising:
            grown = min(self.cap + 1, self.max_start_epoch)
            events.append(ScheduleEvent(iteration, "grow" if grown > self.cap else "restart", {
                "from_cap": self.cap, "to_cap": grown, "r": r, "spread": spread, "points": n,
                "reason": "probe loss decreasing" if decreasing else "probe loss rising",
            }))
            self.cap = grown
            self.probe_series = []
        return events

    def finished(self, iteration: int) -> bool:
        return iteration >= self.max_iterations or self.stopped

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "stm", **asdict(self)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            if key != "kind":
                setattr(self, key, value)
