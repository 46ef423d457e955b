"""The cost ceiling (run-book §4.4, §6.1): GPUCostToday < $40, and the freeze that enforces it.

Before launching transcription, ``podrun transcribe``, the auto-transcribe sensor and
the transcript asset ask ``Budget.check``: when today's cost plus the projected cost
of the request would cross the ceiling, they refuse and say why. When today's
actual cost reaches the ceiling, the freeze is set and every request is refused. The freeze lives in the checkpoint database, so every process on the machine
sees it; on AWS it also sets the GPU compute environment's desired vCPUs to 0 (the
run-book's alarm + Lambda). ``podrun freeze --lift`` lifts it.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

DEFAULT_CEILING_USD = 40.0
# Run-book §4.3: 1,000 episodes in 83 GPU-hours, i.e. about 12x real time per GPU on a g5.xlarge.
GPU_REALTIME_FACTOR = 12.0
DEFAULT_EPISODE_SEC = 1800.0


class BudgetExceeded(RuntimeError):
    pass


@dataclass(frozen=True)
class Freeze:
    active: bool
    reason: str | None = None
    since: float | None = None


class ComputeFreezer(Protocol):
    """Stops GPU spend at its source (AWS: Batch compute environment desiredvCpus = 0)."""

    def freeze(self) -> None: ...


class BatchComputeFreezer:
    def __init__(self, batch_client, compute_environment: str):
        self.client = batch_client
        self.compute_environment = compute_environment

    def freeze(self) -> None:
        self.client.update_compute_environment(computeEnvironment=self.compute_environment,
                                               computeResources={"desiredvCpus": 0})


def start_of_today() -> float:
    return datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


class Budget:
    def __init__(self, checkpoints, db_path: Path, ceiling_usd: float = DEFAULT_CEILING_USD,
                 gpu_hour_usd: float = 0.30, freezer: ComputeFreezer | None = None):
        self.checkpoints = checkpoints  # where each episode's cost is recorded
        self.db_path = Path(db_path)
        self.ceiling_usd = ceiling_usd
        self.gpu_hour_usd = gpu_hour_usd
        self.freezer = freezer
        with self._conn() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS freeze (id INTEGER PRIMARY KEY CHECK (id = 1), "
                         "active INTEGER NOT NULL, reason TEXT, since REAL)")

    def _conn(self) -> sqlite3.Connection:
        return sqlite3.connect(self.db_path, timeout=30)

    def cost_today(self) -> float:
        return self.checkpoints.cost_since(start_of_today())

    def projected_cost(self, audio_seconds: float) -> float:
        return audio_seconds / GPU_REALTIME_FACTOR / 3600 * self.gpu_hour_usd

    def status(self) -> Freeze:
        with self._conn() as conn:
            row = conn.execute("SELECT active, reason, since FROM freeze WHERE id = 1").fetchone()
        return Freeze(bool(row[0]), row[1], row[2]) if row else Freeze(False)

    def freeze(self, reason: str) -> None:
        with self._conn() as conn:
            conn.execute("INSERT INTO freeze (id, active, reason, since) VALUES (1, 1, ?, ?) "
                         "ON CONFLICT(id) DO UPDATE SET active=1, reason=excluded.reason, since=excluded.since",
                         (reason, time.time()))
        if self.freezer is not None:
            self.freezer.freeze()

    def lift(self) -> None:
        with self._conn() as conn:
            conn.execute("INSERT INTO freeze (id, active) VALUES (1, 0) ON CONFLICT(id) DO UPDATE SET active=0")

    def check(self, projected_usd: float = 0.0) -> float:
        """Raise BudgetExceeded (and freeze) if this request may not spend; else return today's cost."""
        state = self.status()
        if state.active:
            raise BudgetExceeded(f"transcription is frozen since "
                                 f"{datetime.fromtimestamp(state.since or 0, timezone.utc):%Y-%m-%d %H:%M} UTC: "
                                 f"{state.reason}. Lift it with `podrun freeze --lift`.")
        today = self.cost_today()
        if today >= self.ceiling_usd:
            # Actual spend reached the ceiling: the run-book's alarm. Freeze until a person lifts it.
            reason = f"GPUCostToday ${today:.2f} reached the ${self.ceiling_usd:.2f} ceiling"
            self.freeze(reason)
            raise BudgetExceeded(reason + ". Transcription is now frozen; lift it with `podrun freeze --lift`.")
        if today + projected_usd > self.ceiling_usd:
            # Only the projection crosses: refuse this request, leave smaller ones possible.
            raise BudgetExceeded(
                f"GPUCostToday ${today:.2f} + projected ${projected_usd:.2f} for this request would cross the "
                f"${self.ceiling_usd:.2f} ceiling; ask for fewer episodes (--limit) or wait for tomorrow")
        return today
