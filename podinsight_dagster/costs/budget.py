"""Where money gets counted: the spend ledger, the $40 ceiling (run-book §4.4, §6.1) and the freeze that enforces it.

Every transcription's cost is appended to a ``SpendLedger`` (never overwritten:
a re-run adds a line), and GPUCostToday is the ledger's sum since midnight UTC.
Before launching transcription, ``podrun transcribe``, the auto-transcribe sensor
and the transcript asset ask ``Budget.check``: when today's cost plus the
projected cost of the request would cross the ceiling, they refuse and say why.
When today's actual cost reaches the ceiling, the freeze is set (in the ledger,
so every process sees it) and the ``ComputeFreezer`` stops GPU capacity at its
source (AWS: the Batch compute environment, the run-book's alarm + Lambda).
``podrun freeze --lift`` lifts both.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Protocol

from podinsight_dagster.costs.prices import Prices
from podinsight_dagster.costs.speed import RUNBOOK_REALTIME_FACTOR, Speed
from podinsight_dagster.store.metrics import Metric, Metrics
from podinsight_dagster.store.sqlite_wal import add_missing_columns, enable_wal

DEFAULT_CEILING_USD = 40.0
DEFAULT_EPISODE_SEC = 1800.0  # an episode with neither a measured nor a declared length is assumed 30 min
MEASURE_WINDOW_S = 14 * 86_400  # the ledger lines a model's speed is measured on: the last two weeks,
MEASURE_LINES = 500             # at most the last 500


class BudgetExceeded(RuntimeError):
    pass


@dataclass(frozen=True)
class Freeze:
    active: bool
    reason: str | None = None
    since: float | None = None


@dataclass(frozen=True)
class SpendEntry:
    """One transcription attempt's cost."""

    partition_key: str
    usd: float
    compute_sec: float = 0.0
    device: str | None = None
    model: str | None = None
    run_id: str | None = None
    ts: float = field(default_factory=time.time)
    audio_sec: float = 0.0  # audio transcribed by ASR (0 for a publisher transcript): measures speed per model


@dataclass(frozen=True)
class Reservation:
    """Projected cost held against the ceiling while a transcription runs; settled (released) when it ends."""

    id: str
    owner: str
    usd: float
    expires: float
    day: str


def day_of(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y%m%d")


class SpendLedger(Protocol):
    """Append-only spend lines, reservations and the freeze flag, shared by every process of a deployment."""

    def record(self, entry: SpendEntry) -> None: ...
    def reserve(self, usd: float, owner: str, ttl_s: float, ceiling_usd: float) -> Reservation | None: ...
    def release(self, reservation_id: str) -> bool: ...
    def reserved(self) -> float: ...
    def spent_since(self, since_ts: float) -> float: ...
    def entries(self, since_ts: float = 0.0) -> list[SpendEntry]: ...
    def freeze_state(self) -> Freeze: ...
    def set_freeze(self, reason: str) -> None: ...
    def lift_freeze(self) -> None: ...


class ComputeFreezer(Protocol):
    """Stops GPU spend at its source, and lets it start again."""

    def freeze(self) -> None: ...
    def unfreeze(self) -> None: ...
    def is_frozen(self) -> bool: ...


class SqliteSpendLedger:
    """The ledger in the local checkpoint database (tables ``spend`` and ``freeze``)."""

    def __init__(self, db_path: Path):
        self.db_path = Path(db_path)
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        with self._conn() as conn:
            enable_wal(conn)
            conn.execute("CREATE TABLE IF NOT EXISTS spend (ts REAL NOT NULL, partition_key TEXT NOT NULL, "
                         "usd REAL NOT NULL, compute_sec REAL, device TEXT, model TEXT, run_id TEXT)")
            conn.execute("CREATE INDEX IF NOT EXISTS spend_ts ON spend(ts)")
            add_missing_columns(conn, "spend", ["audio_sec REAL"])  # a ledger older than audio seconds
            conn.execute("CREATE TABLE IF NOT EXISTS reservations (id TEXT PRIMARY KEY, owner TEXT NOT NULL, "
                         "usd REAL NOT NULL, created REAL NOT NULL, expires REAL NOT NULL, day TEXT NOT NULL)")
            conn.execute("CREATE TABLE IF NOT EXISTS freeze (id INTEGER PRIMARY KEY CHECK (id = 1), "
                         "active INTEGER NOT NULL, reason TEXT, since REAL)")

    def _conn(self) -> sqlite3.Connection:
        return sqlite3.connect(self.db_path, timeout=30)

    def record(self, entry: SpendEntry) -> None:
        with self._conn() as conn:
            conn.execute("INSERT INTO spend (ts, partition_key, usd, compute_sec, device, model, run_id, audio_sec) "
                         "VALUES (?,?,?,?,?,?,?,?)",
                         (entry.ts, entry.partition_key, entry.usd, entry.compute_sec, entry.device, entry.model,
                          entry.run_id, entry.audio_sec))

    def reserve(self, usd: float, owner: str, ttl_s: float, ceiling_usd: float) -> Reservation | None:
        """Hold ``usd`` if today's spend + live reservations + usd stays within the ceiling (one transaction)."""
        import uuid

        at = time.time()
        conn = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                spent = conn.execute("SELECT COALESCE(SUM(usd), 0) FROM spend WHERE ts >= ?",
                                     (start_of_today(),)).fetchone()[0]
                held = conn.execute("SELECT COALESCE(SUM(usd), 0) FROM reservations WHERE expires > ?",
                                    (at,)).fetchone()[0]
                if spent + held + usd > ceiling_usd + 1e-9:
                    conn.execute("ROLLBACK")
                    return None
                r = Reservation(uuid.uuid4().hex, owner, usd, at + ttl_s, day_of(at))
                conn.execute("DELETE FROM reservations WHERE expires <= ?", (at,))
                conn.execute("INSERT INTO reservations VALUES (?,?,?,?,?,?)", (r.id, owner, usd, at, r.expires, r.day))
                conn.execute("COMMIT")
                return r
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        finally:
            conn.close()

    def release(self, reservation_id: str) -> bool:
        with self._conn() as conn:
            return conn.execute("DELETE FROM reservations WHERE id = ?", (reservation_id,)).rowcount == 1

    def reserved(self) -> float:
        with self._conn() as conn:
            row = conn.execute("SELECT COALESCE(SUM(usd), 0) FROM reservations WHERE expires > ?",
                               (time.time(),)).fetchone()
        return float(row[0])

    def spent_since(self, since_ts: float) -> float:
        with self._conn() as conn:
            row = conn.execute("SELECT COALESCE(SUM(usd), 0) FROM spend WHERE ts >= ?", (since_ts,)).fetchone()
        return float(row[0])

    def entries(self, since_ts: float = 0.0) -> list[SpendEntry]:
        with self._conn() as conn:
            rows = conn.execute("SELECT partition_key, usd, compute_sec, device, model, run_id, ts, "
                                "COALESCE(audio_sec, 0) FROM spend WHERE ts >= ? ORDER BY ts, rowid",
                                (since_ts,)).fetchall()
        return [SpendEntry(*row) for row in rows]

    def freeze_state(self) -> Freeze:
        with self._conn() as conn:
            row = conn.execute("SELECT active, reason, since FROM freeze WHERE id = 1").fetchone()
        return Freeze(bool(row[0]), row[1], row[2]) if row else Freeze(False)

    def set_freeze(self, reason: str) -> None:
        with self._conn() as conn:
            conn.execute("INSERT INTO freeze (id, active, reason, since) VALUES (1, 1, ?, ?) "
                         "ON CONFLICT(id) DO UPDATE SET active=1, reason=excluded.reason, since=excluded.since",
                         (reason, time.time()))

    def lift_freeze(self) -> None:
        with self._conn() as conn:
            conn.execute("INSERT INTO freeze (id, active) VALUES (1, 0) ON CONFLICT(id) DO UPDATE SET active=0")


class LocalComputeFreezer:
    """One machine's transcription capacity: a flag beside the ledger that the freeze turns off.

    Locally the GPU (or CPU) is this machine's; there is no fleet to scale to zero,
    so the freezer records the desired capacity, which ``podrun status`` shows.
    """

    def __init__(self, db_path: Path):
        self.db_path = Path(db_path)
        with sqlite3.connect(self.db_path, timeout=30) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS compute_capacity (id INTEGER PRIMARY KEY CHECK (id = 1), "
                         "frozen INTEGER NOT NULL)")

    def _set(self, frozen: bool) -> None:
        with sqlite3.connect(self.db_path, timeout=30) as conn:
            conn.execute("INSERT INTO compute_capacity (id, frozen) VALUES (1, ?) "
                         "ON CONFLICT(id) DO UPDATE SET frozen=excluded.frozen", (int(frozen),))

    def freeze(self) -> None:
        self._set(True)

    def unfreeze(self) -> None:
        self._set(False)

    def is_frozen(self) -> bool:
        with sqlite3.connect(self.db_path, timeout=30) as conn:
            row = conn.execute("SELECT frozen FROM compute_capacity WHERE id = 1").fetchone()
        return bool(row and row[0])


class BatchComputeFreezer:
    """AWS Batch: a frozen compute environment is DISABLED with desiredvCpus 0 (no new GPU instances)."""

    def __init__(self, batch_client, compute_environment: str):
        self.client = batch_client
        self.compute_environment = compute_environment

    def freeze(self) -> None:
        self.client.update_compute_environment(computeEnvironment=self.compute_environment, state="DISABLED",
                                               computeResources={"desiredvCpus": 0})

    def unfreeze(self) -> None:
        self.client.update_compute_environment(computeEnvironment=self.compute_environment, state="ENABLED")

    def is_frozen(self) -> bool:
        envs = self.client.describe_compute_environments(
            computeEnvironments=[self.compute_environment])["computeEnvironments"]
        return bool(envs) and envs[0].get("state") == "DISABLED"


def start_of_today() -> float:
    return datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


@dataclass(frozen=True)
class Rate:
    """What an audio second of transcription is projected to cost, and on what that projection rests."""

    usd_per_audio_second: float
    basis: str                 # one clause, shown with every projection
    speed: Speed | None = None  # the real-time factor used (None: this deployment's own spend lines)

    @property
    def usd_per_1000_audio_hours(self) -> float:
        return self.usd_per_audio_second * 3600 * 1000


def _runbook_speed(model: str | None) -> Speed:
    return Speed(RUNBOOK_REALTIME_FACTOR, "cuda", "float16", model or "the model",
                 "the run-book's planning figure")


class Budget:
    """The ceiling's rules over a ledger and a freezer.

    ``speed`` gives the real-time factor a model is expected to run at where this deployment
    transcribes (``services.build_budget``: device and compute type in force, ``costs.speed``'s
    measurements, the ``PODINSIGHT_REALTIME_FACTOR`` override); without it, the run-book's 12x on a GPU.
    """

    def __init__(self, ledger: SpendLedger, ceiling_usd: float = DEFAULT_CEILING_USD, gpu_hour_usd: float = 0.30,
                 freezer: ComputeFreezer | None = None, metrics: Metrics | None = None, *,
                 prices: Prices | None = None, speed: Callable[[str | None], Speed] | None = None):
        self.ledger = ledger
        self.ceiling_usd = ceiling_usd
        self.gpu_hour_usd = gpu_hour_usd
        self.prices = prices or Prices(gpu_hour=gpu_hour_usd)
        self.speed = speed or _runbook_speed
        self.freezer = freezer
        self.metrics = metrics  # where GPUCostToday goes, if anywhere

    def record_spend(self, entry: SpendEntry) -> None:
        self.ledger.record(entry)
        if self.metrics is not None:
            self.metrics.put([Metric("GPUCostToday", round(self.cost_today(), 6), "None")])

    def cost_today(self) -> float:
        return self.ledger.spent_since(start_of_today())

    def projected_cost(self, audio_seconds: float, model: str | None = None) -> float:
        """Audio seconds x the rate for the model (``rate``)."""
        return audio_seconds * self.usd_per_audio_second(model)

    def usd_per_audio_second(self, model: str | None = None) -> float:
        return self.rate(model).usd_per_audio_second

    def rate(self, model: str | None = None) -> Rate:
        """USD per audio second: the ``PODINSIGHT_REALTIME_FACTOR`` override if set; else what this deployment's
        recent transcriptions with the model cost (its spend lines); else the measured real-time factor for
        the device and compute type in force, at that device's hourly price."""
        speed = self.speed(model)
        if model is not None and speed.basis != "PODINSIGHT_REALTIME_FACTOR":
            lines = [e for e in self.ledger.entries(time.time() - MEASURE_WINDOW_S)
                     if e.model == model and e.audio_sec > 0][-MEASURE_LINES:]
            audio = sum(e.audio_sec for e in lines)
            if audio > 0:
                return Rate(sum(e.usd for e in lines) / audio,
                            f"{model} as this deployment's last {len(lines)} transcriptions with it cost")
        return Rate(speed.usd_per_audio_second(self.prices), speed.describe(), speed)

    def reserve(self, projected_usd: float, owner: str, ttl_s: float) -> Reservation:
        """Hold ``projected_usd`` against the ceiling in one transaction, or raise BudgetExceeded.

        Two launches whose sum crosses the ceiling: exactly one is admitted. ``settle`` releases it
        when the step ends (its spend is then in the ledger); a dead run's reservation expires.
        """
        self.check()
        r = self.ledger.reserve(round(projected_usd, 6), owner, ttl_s, self.ceiling_usd)
        if r is None:
            today, held = self.cost_today(), self.ledger.reserved()
            raise BudgetExceeded(
                f"GPUCostToday ${today:.2f} + ${held:.2f} reserved by running transcriptions + projected "
                f"${projected_usd:.2f} for this request would cross the ${self.ceiling_usd:.2f} ceiling; ask for "
                "fewer episodes or wait")
        return r

    def settle(self, reservation: Reservation | None) -> None:
        if reservation is not None:
            self.ledger.release(reservation.id)

    def status(self) -> Freeze:
        return self.ledger.freeze_state()

    def freeze(self, reason: str) -> None:
        self.ledger.set_freeze(reason)
        if self.freezer is not None:
            self.freezer.freeze()

    def lift(self) -> None:
        self.ledger.lift_freeze()
        if self.freezer is not None:
            self.freezer.unfreeze()

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
        held = self.ledger.reserved() if projected_usd else 0.0
        if today + held + projected_usd > self.ceiling_usd:
            # Only the projection crosses: refuse this request, leave smaller ones possible.
            raise BudgetExceeded(
                f"GPUCostToday ${today:.2f}{f' + ${held:.2f} reserved' if held else ''} + projected ${projected_usd:.2f} for this request would cross the "
                f"${self.ceiling_usd:.2f} ceiling; ask for fewer episodes (--limit) or wait for tomorrow")
        return today
