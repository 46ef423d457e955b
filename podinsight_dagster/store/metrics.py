"""Run-book metrics (§5): DownloadSuccessRate, PerHost429, GBTransferred, AvgDownloadMB, GPUCostToday.

Locally they land in a ``metrics`` table beside the checkpoints (``podrun status``
and the asset checks read them); on AWS the same calls go to CloudWatch
``put_metric_data`` under the ``PodInsight`` namespace.
"""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import datetime, timedelta, timezone
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from podinsight_dagster.store.sqlite_wal import enable_wal

NAMESPACE = "PodInsight"


@dataclass(frozen=True)
class Metric:
    name: str
    value: float
    unit: str = "None"
    dimensions: tuple[tuple[str, str], ...] = ()


class Metrics(Protocol):
    """Where the run-book's metrics go, and where the checks and ``podrun status`` read them back."""

    def put(self, metrics: list[Metric]) -> None: ...
    def latest(self, name: str) -> dict[str, float]:
        """The newest value of ``name`` per dimension set, keyed by the dimensions as sorted JSON."""
        ...


class SqliteMetrics:
    def __init__(self, path: Path):
        self.path = Path(path)
        with sqlite3.connect(self.path, timeout=30) as conn:
            enable_wal(conn)
            conn.execute("CREATE TABLE IF NOT EXISTS metrics (ts REAL NOT NULL, name TEXT NOT NULL, "
                         "value REAL NOT NULL, unit TEXT, dimensions TEXT)")
            conn.execute("CREATE INDEX IF NOT EXISTS metrics_name_ts ON metrics(name, ts)")

    def put(self, metrics: list[Metric]) -> None:
        now = time.time()
        with sqlite3.connect(self.path, timeout=30) as conn:
            conn.executemany("INSERT INTO metrics VALUES (?,?,?,?,?)",
                             [(now, m.name, m.value, m.unit, json.dumps(dict(m.dimensions), sort_keys=True))
                              for m in metrics])

    def latest(self, name: str) -> dict[str, float]:
        """Latest value of a metric per dimension set (JSON of the dimensions -> value)."""
        with sqlite3.connect(self.path, timeout=30) as conn:
            rows = conn.execute(
                "SELECT dimensions, value FROM metrics WHERE name=? AND rowid IN "
                "(SELECT MAX(rowid) FROM metrics WHERE name=? GROUP BY dimensions)", (name, name)).fetchall()
        return {d: v for d, v in rows}


class CloudWatchMetrics:
    """The run-book's metrics in CloudWatch; ``latest`` reads them back so checks and status work alike."""

    # How far back ``latest`` looks; CloudWatch keeps 1-minute points for 15 days.
    LOOKBACK_S = 14 * 86400

    def __init__(self, client, namespace: str = NAMESPACE):
        self.client = client
        self.namespace = namespace

    def latest(self, name: str) -> dict[str, float]:
        """The newest 1-second period's value per dimension set (its maximum, if several were put in it)."""
        series = []
        for page in self.client.get_paginator("list_metrics").paginate(Namespace=self.namespace, MetricName=name):
            series += [m["Dimensions"] for m in page.get("Metrics", [])]
        if not series:
            return {}
        end = datetime.now(timezone.utc) + timedelta(minutes=1)  # the current period included
        start = end - timedelta(seconds=self.LOOKBACK_S)
        out: dict[str, float] = {}
        for i in range(0, len(series), 500):  # GetMetricData takes at most 500 queries a call
            batch = series[i:i + 500]
            queries = [{"Id": f"m{j}", "ReturnData": True,
                        "MetricStat": {"Metric": {"Namespace": self.namespace, "MetricName": name, "Dimensions": d},
                                       "Period": 1, "Stat": "Maximum"}} for j, d in enumerate(batch)]
            result = self.client.get_metric_data(MetricDataQueries=queries, StartTime=start, EndTime=end,
                                                 ScanBy="TimestampDescending")
            for r in result["MetricDataResults"]:
                if r.get("Values"):
                    dims = batch[int(r["Id"][1:])]
                    out[json.dumps({d["Name"]: d["Value"] for d in dims}, sort_keys=True)] = float(r["Values"][0])
        return out

    def put(self, metrics: list[Metric]) -> None:
        # High resolution (1 s), so ``latest`` tells apart values put a few seconds apart.
        data = [{"MetricName": m.name, "Value": float(m.value), "Unit": m.unit, "StorageResolution": 1,
                 "Dimensions": [{"Name": k, "Value": v} for k, v in m.dimensions]} for m in metrics]
        for i in range(0, len(data), 1000):  # PutMetricData takes at most 1000 values a call
            self.client.put_metric_data(Namespace=self.namespace, MetricData=data[i:i + 1000])
