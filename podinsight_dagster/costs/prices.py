"""Compute prices: what an hour of GPU or CPU costs, the figures every cost in Pod-Insight is computed from."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Prices:
    """USD per hour. The run-book prices a g5.xlarge Spot hour at $0.30 (§4.5: 83 GPU-h x $0.30)."""

    gpu_hour: float = 0.30
    cpu_hour: float = 0.04

    def per_second(self, device: str) -> float:
        return (self.gpu_hour if device == "cuda" else self.cpu_hour) / 3600
