"""Averaged weights: what a fit validates and exports instead of the last step's weights (``average_epochs``)."""

from __future__ import annotations

import torch

__all__ = ["WeightAverage"]


class WeightAverage:
    """An exponential moving average of a model's parameters, updated after every optimiser step.

    The decay ramps up as ``(1 + t) / (10 + t)`` towards ``1 - 1 / horizon`` so the first steps do not drag
    the random initial weights along for a whole horizon."""

    def __init__(self, model: torch.nn.Module, horizon: float) -> None:
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.shadow = [p.detach().clone() for p in self.params]
        self.limit = 1.0 - 1.0 / max(horizon, 1.0)
        self.steps = 0

    def update(self) -> None:
        self.steps += 1
        decay = min(self.limit, (1 + self.steps) / (10 + self.steps))
        with torch.no_grad():
            torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1.0 - decay)

    def swap(self) -> None:
        """Exchange the model's weights and the average (call twice to restore)."""
        with torch.no_grad():
            for p, s in zip(self.params, self.shadow, strict=True):
                tmp = p.detach().clone()
                p.copy_(s)
                s.copy_(tmp)
