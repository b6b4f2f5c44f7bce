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

    Start epochs cycle through [0, cap). Every iteration the loop also measures, without
    updating anything, the normalised loss of matching epoch `cap` -> `cap + M` (the probe).
    Every `check_every` iterations the Pearson correlation r of the probe series with its
    index is tested against the null spread s = 1/sqrt(n - 2): r < -lambda_decrease * s means
    the images already generalise to the next epoch; r > lambda_increase * s means they
    overfit the earlier ones; either way the pool grows and the series restarts. After
    `patience` iterations without growth the schedule fine-tunes: the pixel learning rate
    decays by `decay` every `decay_every` iterations, and the run stops once that factor
    falls below `stop_factor` (or at `max_iterations`, a safety bound).
    """

    max_start_epoch: int
    max_iterations: int
    lambda_decrease: float = 5.0
    lambda_increase: float = 3.0
    check_every: int = 10
    patience: int = 1000
    decay: float = 0.8
    decay_every: int = 50
    stop_factor: float = 0.01
    cap: int = 1
    cycle_position: int = 0
    probe_series: list[float] = field(default_factory=list)
    last_growth_iteration: int = 0
    fine_tune_since: int | None = None
    iterations_seen: int = 0

    def start_epoch(self, iteration: int, rng: np.random.Generator) -> int:
        epoch = self.cycle_position % self.cap
        self.cycle_position += 1
        return epoch

    def probe_epoch(self) -> int | None:
        return self.cap if self.cap < self.max_start_epoch and self.fine_tune_since is None else None

    @property
    def stage(self) -> int:
        return self.cap - 1

    def pixel_lr_factor(self) -> float:
        if self.fine_tune_since is None:
            return 1.0
        return self.decay ** ((self.iterations_seen - self.fine_tune_since) // self.decay_every)

    def observe(self, iteration: int, probe_loss: float | None) -> list[ScheduleEvent]:
        """Record iteration `iteration` (1-based count of finished iterations) and its probe loss."""
        self.iterations_seen = iteration
        events: list[ScheduleEvent] = []
        if self.fine_tune_since is not None:
            return events
        if probe_loss is not None and math.isfinite(probe_loss):
            self.probe_series.append(probe_loss)
        n = len(self.probe_series)
        if self.probe_epoch() is not None and iteration % self.check_every == 0 and n >= 3:
            r = pearson_with_index(self.probe_series)
            spread = 1.0 / math.sqrt(n - 2)
            if r < -self.lambda_decrease * spread or r > self.lambda_increase * spread:
                events.append(ScheduleEvent(iteration, "grow", {
                    "from_cap": self.cap, "to_cap": self.cap + 1, "r": r, "spread": spread, "points": n,
                    "reason": "probe loss decreasing" if r < 0 else "probe loss rising",
                }))
                self.cap += 1
                self.cycle_position = 0
                self.probe_series = []
                self.last_growth_iteration = iteration
        if iteration - self.last_growth_iteration >= self.patience:
            self.fine_tune_since = iteration
            events.append(ScheduleEvent(iteration, "fine_tune", {"cap": self.cap, "iterations_without_growth": self.patience}))
        return events

    def finished(self, iteration: int) -> bool:
        return iteration >= self.max_iterations or self.pixel_lr_factor() < self.stop_factor

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "stm", **asdict(self)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            if key != "kind":
                setattr(self, key, value)
