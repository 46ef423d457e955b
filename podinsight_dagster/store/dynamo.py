"""State on AWS: episodes, feeds, the spend ledger and the freeze in one DynamoDB table (run-book: podinsights-status).

One table, keyed as the run-book keys everything: ``feed_slug`` (hash) + ``guid_key``
(range), so an episode's item is ``(feed_slug, guid_key)`` and a feed's episodes are
one query. The other items live under reserved hash keys that no feed slug can take
(slugs never start with ``#``):

    #feed    / <slug>                 a feed (validators, effective URL, last status)
    #spend   / <epoch s>#<ns>#<id>    one spend line (append-only)
    #spend-day / <yyyymmdd>           that day's total (atomic ADD, with the line, in one transaction)
    #budget  / freeze                 the freeze

The ``state-index`` global secondary index (hash ``state``, range ``discovered_at``)
answers "every episode in state X" without a scan. ``TABLE`` is the schema, shared
with the tests and checked against iac/dynamodb_table.tf.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, fields
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Iterable

from boto3.dynamodb.conditions import Attr, Key
from botocore.exceptions import ClientError

from podinsight_dagster.costs.budget import Freeze, SpendEntry
from podinsight_dagster.store.checkpoints import (DOWNLOADED, FAILED, STATES, TRANSCRIBED, EpisodeRecord,
                                                   FeedRecord, now)
from podinsight_dagster.store.keys import EpisodeKey

STATE_INDEX = "state-index"
TABLE = {
    "KeySchema": [{"AttributeName": "feed_slug", "KeyType": "HASH"},
                  {"AttributeName": "guid_key", "KeyType": "RANGE"}],
    "AttributeDefinitions": [{"AttributeName": "feed_slug", "AttributeType": "S"},
                             {"AttributeName": "guid_key", "AttributeType": "S"},
                             {"AttributeName": "state", "AttributeType": "S"},
                             {"AttributeName": "discovered_at", "AttributeType": "N"}],
    "GlobalSecondaryIndexes": [{"IndexName": STATE_INDEX,
                                "KeySchema": [{"AttributeName": "state", "KeyType": "HASH"},
                                              {"AttributeName": "discovered_at", "KeyType": "RANGE"}],
                                "Projection": {"ProjectionType": "ALL"}}],
    "BillingMode": "PAY_PER_REQUEST",
}
FEED, SPEND, SPEND_DAY, BUDGET = "#feed", "#spend", "#spend-day", "#budget"
_EPISODE_FIELDS = [f.name for f in fields(EpisodeRecord)]
_DESCRIPTIVE = ("title", "enclosure_url", "enclosure_type", "enclosure_length", "published", "duration_hint_sec",
                "transcripts_json", "persons_json", "chapters_url")


def create_table(client, name: str) -> None:
    """Create the status table (tests and first-time set-up; production creates it with Terraform)."""
    client.create_table(TableName=name, **TABLE)
    client.get_waiter("table_exists").wait(TableName=name)


def _to_item(value: Any) -> Any:
    return Decimal(repr(value)) if isinstance(value, float) else value


def _from_item(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() and "." not in str(value) else float(value)
    return value


def _conditional_failed(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") in ("ConditionalCheckFailedException",
                                                         "TransactionCanceledException")


class DynamoCheckpointStore:
    """The CheckpointStore on a DynamoDB table (a boto3 ``Table`` resource)."""

    def __init__(self, table):
        self.table = table

    # ---- episodes -------------------------------------------------------
    @staticmethod
    def _episode(item: dict) -> EpisodeRecord:
        values = {k: _from_item(item.get(k)) for k in _EPISODE_FIELDS}
        for k in ("discovered_at", "updated_at", "downloaded_at", "transcribed_at", "cost_usd",
                  "duration_hint_sec"):
            if values[k] is not None:
                values[k] = float(values[k])
        return EpisodeRecord(**values)

    @staticmethod
    def _key(partition_key: str) -> dict:
        ek = EpisodeKey.parse(partition_key)
        return {"feed_slug": ek.feed_slug, "guid_key": ek.guid_key}

    def register_episodes(self, records: Iterable[EpisodeRecord]) -> list[str]:
        new = []
        for rec in records:
            item = {k: _to_item(v) for k, v in asdict(rec).items() if v is not None}
            try:
                # Conditional: of two tasks registering the same episode, exactly one creates it.
                self.table.put_item(Item=item, ConditionExpression=Attr("guid_key").not_exists())
                new.append(rec.partition_key)
            except ClientError as exc:
                if not _conditional_failed(exc):
                    raise
                # Known: keep its state, refresh what publishers fix (titles, CDN moves).
                self._set(rec.partition_key, {k: getattr(rec, k) for k in _DESCRIPTIVE}, touch=False)
        return new

    def get(self, partition_key: str) -> EpisodeRecord | None:
        item = self.table.get_item(Key=self._key(partition_key), ConsistentRead=True).get("Item")
        return self._episode(item) if item else None

    def require(self, partition_key: str) -> EpisodeRecord:
        rec = self.get(partition_key)
        if rec is None:
            raise KeyError(f"episode {partition_key} is not in the checkpoint store; run episode_manifest first")
        return rec

    def _set(self, partition_key: str, values: dict, *, touch: bool = True, add: dict | None = None) -> None:
        if touch:
            values = {**values, "updated_at": now()}
        sets = {k: v for k, v in values.items() if v is not None}
        removes = [k for k, v in values.items() if v is None]
        names = {f"#{k}": k for k in [*values, *(add or {})]}
        parts, attr_values = [], {}
        if sets:
            parts.append("SET " + ", ".join(f"#{k} = :{k}" for k in sets))
            attr_values.update({f":{k}": _to_item(v) for k, v in sets.items()})
        if add:
            parts.append("ADD " + ", ".join(f"#{k} :{k}" for k in add))
            attr_values.update({f":{k}": _to_item(v) for k, v in add.items()})
        if removes:
            parts.append("REMOVE " + ", ".join(f"#{k}" for k in removes))
        kwargs = {"ExpressionAttributeValues": attr_values} if attr_values else {}
        try:
            self.table.update_item(Key=self._key(partition_key), UpdateExpression=" ".join(parts),
                                   ExpressionAttributeNames=names, ConditionExpression="attribute_exists(guid_key)",
                                   **kwargs)
        except ClientError as exc:
            if not _conditional_failed(exc):  # an unknown episode: nothing to update, as in SQLite
                raise

    def update(self, partition_key: str, **values: object) -> None:
        unknown = set(values) - set(_EPISODE_FIELDS)
        if unknown:
            raise ValueError(f"unknown episode fields: {sorted(unknown)}")
        self._set(partition_key, values)

    def mark_attempt(self, partition_key: str) -> None:
        self._set(partition_key, {}, add={"attempts": 1})

    def mark_downloaded(self, partition_key: str, *, bytes: int, sha256: str) -> None:
        self._set(partition_key, {"state": DOWNLOADED, "bytes": bytes, "sha256": sha256, "last_error": None,
                                  "failed_stage": None, "downloaded_at": now()})

    def mark_transcribed(self, partition_key: str, *, cost_usd: float | None = None) -> None:
        self._set(partition_key, {"state": TRANSCRIBED, "last_error": None, "failed_stage": None,
                                  "transcribed_at": now(), "cost_usd": cost_usd})

    def mark_failed(self, partition_key: str, stage: str, error: str) -> None:
        self._set(partition_key, {"state": FAILED, "failed_stage": stage, "last_error": error[:2000]})

    def _all_pages(self, call, **kwargs) -> list[dict]:
        items, start = [], None
        while True:
            page = call(**kwargs, **({"ExclusiveStartKey": start} if start else {}))
            items += page.get("Items", [])
            start = page.get("LastEvaluatedKey")
            if not start:
                return items

    def episodes(self, state: str | None = None, feed_slug: str | None = None,
                 limit: int | None = None) -> list[EpisodeRecord]:
        if state:
            kwargs: dict = {"IndexName": STATE_INDEX, "KeyConditionExpression": Key("state").eq(state)}
            if feed_slug:
                kwargs["FilterExpression"] = Attr("feed_slug").eq(feed_slug)
            items = self._all_pages(self.table.query, **kwargs)
        elif feed_slug:
            items = self._all_pages(self.table.query, KeyConditionExpression=Key("feed_slug").eq(feed_slug))
        else:
            items = self._all_pages(self.table.scan, FilterExpression=Attr("state").exists())
        recs = sorted((self._episode(i) for i in items), key=lambda r: (r.discovered_at, r.partition_key))
        return recs[:limit] if limit is not None else recs

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in STATES}
        for rec in self.episodes():
            out[rec.state] += 1
        return out

    def counts_by_feed(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for rec in self.episodes():
            out.setdefault(rec.feed_slug, {s: 0 for s in STATES})[rec.state] += 1
        return out

    # ---- feeds ----------------------------------------------------------
    def get_feed(self, slug: str) -> FeedRecord | None:
        item = self.table.get_item(Key={"feed_slug": FEED, "guid_key": slug}, ConsistentRead=True).get("Item")
        return self._feed(item) if item else None

    @staticmethod
    def _feed(item: dict) -> FeedRecord:
        values = {f.name: _from_item(item.get(f.name)) for f in fields(FeedRecord) if f.name != "slug"}
        if values["checked_at"] is not None:
            values["checked_at"] = float(values["checked_at"])
        return FeedRecord(slug=item["guid_key"], **{k: v for k, v in values.items() if v is not None})

    def upsert_feed(self, rec: FeedRecord) -> None:
        data = {k: _to_item(v) for k, v in asdict(rec).items() if v is not None and k != "slug"}
        self.table.put_item(Item={"feed_slug": FEED, "guid_key": rec.slug, **data})

    def feeds(self) -> list[FeedRecord]:
        items = self._all_pages(self.table.query, KeyConditionExpression=Key("feed_slug").eq(FEED))
        return sorted((self._feed(i) for i in items), key=lambda f: f.slug)

    def close(self) -> None:
        """Nothing to release: boto3 pools its HTTP connections per client."""


class DynamoSpendLedger:
    """The SpendLedger in the status table: append-only lines plus a per-day total, written in one transaction."""

    def __init__(self, table):
        self.table = table
        self.client = table.meta.client

    def record(self, entry: SpendEntry) -> None:
        day = datetime.fromtimestamp(entry.ts, timezone.utc).strftime("%Y%m%d")
        # Sorted by the spend's time, then by when it was written (lines of the same moment keep their order).
        line = {"feed_slug": SPEND, "guid_key": f"{entry.ts:017.6f}#{time.time_ns():020d}#{uuid.uuid4().hex[:8]}",
                **{k: _to_item(v) for k, v in asdict(entry).items() if v is not None}}
        # The resource's client serialises plain values itself (Decimal for numbers).
        self.client.transact_write_items(TransactItems=[
            {"Put": {"TableName": self.table.name, "Item": line,
                     "ConditionExpression": "attribute_not_exists(guid_key)"}},
            {"Update": {"TableName": self.table.name, "Key": {"feed_slug": SPEND_DAY, "guid_key": day},
                        "UpdateExpression": "ADD #usd :usd, #lines :one",
                        "ExpressionAttributeNames": {"#usd": "usd", "#lines": "lines"},
                        "ExpressionAttributeValues": {":usd": _to_item(float(entry.usd)), ":one": 1}}},
        ])

    def _lines(self, since_ts: float) -> list[dict]:
        items, start = [], None
        cond = Key("feed_slug").eq(SPEND) & Key("guid_key").gte(f"{max(0.0, since_ts):017.6f}")
        while True:
            page = self.table.query(KeyConditionExpression=cond, ConsistentRead=True,
                                    **({"ExclusiveStartKey": start} if start else {}))
            items += page.get("Items", [])
            start = page.get("LastEvaluatedKey")
            if not start:
                return items

    def spent_since(self, since_ts: float) -> float:
        return float(sum(Decimal(i["usd"]) for i in self._lines(since_ts)))

    def spent_on(self, day: str) -> float:
        """One UTC day's total (yyyymmdd) from its running total item: one read."""
        item = self.table.get_item(Key={"feed_slug": SPEND_DAY, "guid_key": day}, ConsistentRead=True).get("Item")
        return float(item["usd"]) if item else 0.0

    def entries(self, since_ts: float = 0.0) -> list[SpendEntry]:
        out = []
        for i in self._lines(since_ts):
            out.append(SpendEntry(i["partition_key"], float(i["usd"]),
                                  float(i["compute_sec"]) if "compute_sec" in i else 0.0, i.get("device"),
                                  i.get("model"), i.get("run_id"), float(i["ts"])))
        return out

    def freeze_state(self) -> Freeze:
        item = self.table.get_item(Key={"feed_slug": BUDGET, "guid_key": "freeze"}, ConsistentRead=True).get("Item")
        if not item:
            return Freeze(False)
        return Freeze(bool(item.get("active")), item.get("reason"),
                      float(item["since"]) if item.get("since") is not None else None)

    def set_freeze(self, reason: str) -> None:
        self.table.put_item(Item={"feed_slug": BUDGET, "guid_key": "freeze", "active": True, "reason": reason,
                                  "since": _to_item(time.time())})

    def lift_freeze(self) -> None:
        self.table.update_item(Key={"feed_slug": BUDGET, "guid_key": "freeze"},
                               UpdateExpression="SET active = :f", ExpressionAttributeValues={":f": False})
