"""The student's learned inner step size alpha, updated as the reference MTT updates its `syn_lr`.

MTT (distill.py) optimises the step size itself, initialised to lr_teacher, with
`SGD([syn_lr], lr=lr_lr, momentum=0.5)`, and evaluates the distilled set with the learned value.
`LearnedStepSizes` holds that one value, or one per start epoch for STM's independent step sizes
(the STM code's `--lr_mode independent-lr`: epoch e is matched with alpha_e, the probe of the next
epoch uses the newest, a new stage starts from a copy of the newest with fresh momentum, and every
alpha moves at lr_lr x cap). The SGD step is written out so that only the alpha used moves: one
torch optimizer over the vector would keep moving the others through their momentum.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MOMENTUM = 0.5
"""distill.py's momentum for syn_lr."""


@dataclass
class LearnedStepSizes:
    values: torch.Tensor
    """alpha per stage (one entry unless per-stage), float32 on the run's device."""
    momentum: torch.Tensor
    """SGD momentum buffers: zero until first used, which makes the first step torch.optim.SGD's (buffer = gradient)."""
    per_stage: bool

    @classmethod
    def start(cls, initial: float, stages: int, device: torch.device) -> LearnedStepSizes:
        values = torch.full((stages,), float(initial), device=device)
        return cls(values, torch.zeros_like(values), stages > 1)

    def index_for(self, start_epoch: int) -> int:
        """The alpha that matches from `start_epoch`."""
        return start_epoch if self.per_stage else 0

    def newest(self, stage: int) -> int:
        """The alpha of stage `stage` (pool [0, stage + 1)): the probe's, and the one evaluation trains with."""
        return stage if self.per_stage else 0

    def learning_rate(self, lr_lr: float, stage: int) -> float:
        return lr_lr * (stage + 1) if self.per_stage else lr_lr

    def step(self, index: int, gradient: torch.Tensor, lr: float) -> None:
        with torch.no_grad():
            self.momentum[index] = MOMENTUM * self.momentum[index] + gradient
            self.values[index] -= lr * self.momentum[index]

    def begin_stage(self, stage: int) -> None:
        """Stage `stage` begins: its alpha starts from the previous stage's, with no momentum."""
        if self.per_stage and 0 < stage < len(self.values):
            with torch.no_grad():
                self.values[stage] = self.values[stage - 1]
                self.momentum[stage] = 0.0

    def value(self, index: int) -> float:
        return float(self.values[index])
