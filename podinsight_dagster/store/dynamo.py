"""State on AWS: episodes, feeds, the spend ledger and the freeze in one DynamoDB table (run-book: podinsights-status).

Each stage of an episode (download, transcribe, segments, kpis) is a set of flat attributes
on the episode's item, ``<stage>__status``, ``<stage>__attempts``, ``<stage>__owner``, ...; every
change to a stage is a compare-and-swap on ``<stage>__updated_at`` (and the episode's ``state``),
so a claim (a lease) is taken by exactly one of two tasks.

One table, keyed as the run-book keys everything: ``feed_slug`` (hash) + ``guid_key``
(range), so an episode's item is ``(feed_slug, guid_key)`` and a feed's episodes are
one query. The other items live under reserved hash keys that no feed slug can take
(slugs never start with ``#``):

    #feed    / <slug>                 a feed (validators, effective URL, last status)
    #spend   / <epoch s>#<ns>#<id>    one spend line (append-only)
    #spend-day / <yyyymmdd>           that day's total (atomic ADD, with the line, in one transaction)
    #budget  / freeze                 the freeze
    #reservation / <id>               a budget reservation (owner, usd, day, expires)

The day item also carries ``committed`` = spend + live reservations of the day: a reservation is
one transaction (put the reservation, ``ADD committed :x`` on the condition ``committed <= ceiling - x``),
since a condition cannot add; a spend line adds to both ``usd`` and ``committed``, releasing a
reservation (settled, or found expired) subtracts it, guarded by the conditional delete of its item.

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

from podinsight_dagster.costs.budget import Freeze, Reservation, SpendEntry, day_of
from podinsight_dagster.store.records import (carried_fields, DISCOVERED, DONE, DOWNLOAD, DOWNLOADED, FAILED, KPIS,
                                              PENDING, RUNNING, STAGE_STATUSES, STAGES, STATES, TRANSCRIBED,
                                              EpisodeRecord, FeedRecord, StageStatus, _apply, claim_refusal, now)
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
FEED, SPEND, SPEND_DAY, BUDGET, RESERVATION = "#feed", "#spend", "#spend-day", "#budget", "#reservation"
_EPISODE_FIELDS = [f.name for f in fields(EpisodeRecord)]


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

    def register_episodes(self, records: Iterable[EpisodeRecord], *, from_feed: bool = False) -> list[str]:
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
                # Known: keep its state, refresh what publishers fix (titles, CDN moves); what the record
                # does not carry (None: a manifest row has no show notes) is never erased.
                carried = carried_fields(rec, from_feed)
                if carried:
                    self._set(rec.partition_key, carried, touch=False)
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
        rec = self.get(partition_key)
        state = TRANSCRIBED if rec is not None and rec.state == TRANSCRIBED else DOWNLOADED  # never backwards
        self._set(partition_key, {"state": state, "bytes": bytes, "sha256": sha256, "last_error": None,
                                  "failed_stage": None, "downloaded_at": now()})
        self.mark_stage(partition_key, DOWNLOAD, DONE)

    def mark_transcribed(self, partition_key: str, *, cost_usd: float | None = None) -> None:
        self._set(partition_key, {"state": TRANSCRIBED, "last_error": None, "failed_stage": None,
                                  "transcribed_at": now(), "cost_usd": cost_usd})
        self.mark_stage(partition_key, KPIS, DONE)

    def mark_failed(self, partition_key: str, stage: str, error: str, *, retryable: bool = False) -> None:
        rec = self.get(partition_key)
        values: dict = {"failed_stage": stage, "last_error": error[:2000]}
        if rec is not None and rec.state == DISCOVERED and stage == DOWNLOAD:
            values["state"] = FAILED
        self._set(partition_key, values)
        self.mark_stage(partition_key, stage, FAILED, error=error, retryable=retryable)

    # ---- stages: flat attributes <stage>__<field>, changed by compare-and-swap -------------
    _STAGE_FIELDS = [f.name for f in fields(StageStatus) if f.name not in ("partition_key", "stage")]

    @classmethod
    def _stage_of(cls, item: dict | None, partition_key: str, stage: str) -> StageStatus:
        st = StageStatus(partition_key, stage)
        for f in cls._STAGE_FIELDS:
            value = _from_item((item or {}).get(f"{stage}__{f}"))
            if value is not None:
                setattr(st, f, float(value) if f in ("lease_until", "started_at", "finished_at", "updated_at")
                        else value)
        return st

    def _cas_stage(self, partition_key: str, stage: str, change) -> str | None:
        """Read the episode and ``stage``, let ``change(rec, st)`` mutate st (or refuse), write it back if unchanged."""
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}")
        for _ in range(20):
            item = self.table.get_item(Key=self._key(partition_key), ConsistentRead=True).get("Item")
            rec = self._episode(item) if item else None
            st = self._stage_of(item, partition_key, stage)
            why = change(rec, st)
            if why is not None or rec is None:
                return why or "not in the checkpoint store"
            before = (item or {}).get(f"{stage}__updated_at")
            st.updated_at = now()
            values = {f"{stage}__{f}": getattr(st, f) for f in self._STAGE_FIELDS}
            sets = {k: v for k, v in values.items() if v is not None}
            removes = [k for k, v in values.items() if v is None]
            names = {f"#a{i}": k for i, k in enumerate(values)}
            alias = {k: a for a, k in names.items()}
            expr = "SET " + ", ".join(f"{alias[k]} = :v{i}" for i, k in enumerate(sets))
            if removes:
                expr += " REMOVE " + ", ".join(alias[k] for k in removes)
            attr_values = {f":v{i}": _to_item(v) for i, v in enumerate(sets.values())}
            names["#state"], attr_values[":state"] = "state", rec.state
            names["#u"] = f"{stage}__updated_at"
            cond = "attribute_exists(guid_key) AND #state = :state AND "
            if before is None:
                cond += "attribute_not_exists(#u)"
            else:
                cond += "#u = :before"
                attr_values[":before"] = before
            try:
                self.table.update_item(Key=self._key(partition_key), UpdateExpression=expr,
                                       ConditionExpression=cond, ExpressionAttributeNames=names,
                                       ExpressionAttributeValues=attr_values)
                return None
            except ClientError as exc:
                if not _conditional_failed(exc):
                    raise
                # Someone changed the episode or the stage meanwhile: read again and decide again.
        raise RuntimeError(f"{partition_key} {stage}: kept changing while being updated")

    def stage(self, partition_key: str, stage: str) -> StageStatus:
        item = self.table.get_item(Key=self._key(partition_key), ConsistentRead=True).get("Item")
        return self._stage_of(item, partition_key, stage)

    def _episode_items(self) -> list[dict]:
        return self._all_pages(self.table.scan, FilterExpression=Attr("state").exists())

    def stages(self, stage: str) -> dict[str, StageStatus]:
        out = {}
        for item in self._episode_items():
            if f"{stage}__status" in item:
                pk = f"{item['feed_slug']}/{item['guid_key']}"
                out[pk] = self._stage_of(item, pk, stage)
        return out

    def stage_counts(self) -> dict[str, dict[str, int]]:
        out = {st: {s: 0 for s in STAGE_STATUSES} for st in STAGES}
        for item in self._episode_items():
            for st in STAGES:
                out[st][item.get(f"{st}__status", PENDING)] += 1
        return out

    def mark_stage(self, partition_key: str, stage: str, status: str, *, error: str | None = None,
                   retryable: bool | None = None, code_version: str | None = None) -> None:
        if status not in STAGE_STATUSES:
            raise ValueError(f"unknown status {status!r}")

        def change(rec, st):
            _apply(st, status, error=error, retryable=retryable, code_version=code_version)

        self._cas_stage(partition_key, stage, change)

    def claim(self, partition_key: str, stage: str, owner: str, ttl_s: float, *,
              unless_done_version: str | None = None) -> str | None:
        def change(rec, st):
            at = now()
            why = claim_refusal(rec, st, owner, at=at, unless_done_version=unless_done_version)
            if why is None:
                _apply(st, RUNNING)
                st.owner, st.lease_until = owner, at + ttl_s
            return why

        return self._cas_stage(partition_key, stage, change)

    def release_claims(self, owner: str, reason: str) -> int:
        released = 0
        for item in self._episode_items():
            pk = f"{item['feed_slug']}/{item['guid_key']}"
            for stage in STAGES:
                if item.get(f"{stage}__owner") != owner:
                    continue

                def change(rec, st):
                    if st.owner != owner or st.status != RUNNING:
                        return "not held"
                    _apply(st, FAILED, error=reason, retryable=True)

                released += self._cas_stage(pk, stage, change) is None
        return released

    def renew(self, partition_key: str, stage: str, owner: str, ttl_s: float) -> bool:
        def change(rec, st):
            if st.status != RUNNING or st.owner != owner:
                return "not held"
            st.lease_until = now() + ttl_s

        return self._cas_stage(partition_key, stage, change) is None

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
                        "UpdateExpression": "ADD #usd :usd, #lines :one, #c :usd",
                        "ExpressionAttributeNames": {"#usd": "usd", "#lines": "lines", "#c": "committed"},
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
                                  i.get("model"), i.get("run_id"), float(i["ts"]),
                                  float(i["audio_sec"]) if "audio_sec" in i else 0.0))
        return out

    # ---- reservations ----
    def _reservations(self) -> list[dict]:
        items, start = [], None
        while True:
            page = self.table.query(KeyConditionExpression=Key("feed_slug").eq(RESERVATION), ConsistentRead=True,
                                    **({"ExclusiveStartKey": start} if start else {}))
            items += page.get("Items", [])
            start = page.get("LastEvaluatedKey")
            if not start:
                return items

    def _drop(self, item: dict) -> bool:
        """Remove a reservation and take it off its day's committed total, once (a conditional delete)."""
        try:
            self.client.transact_write_items(TransactItems=[
                {"Delete": {"TableName": self.table.name, "Key": {"feed_slug": RESERVATION, "guid_key": item["guid_key"]},
                            "ConditionExpression": "attribute_exists(guid_key)"}},
                {"Update": {"TableName": self.table.name, "Key": {"feed_slug": SPEND_DAY, "guid_key": item["day"]},
                            "UpdateExpression": "ADD #c :neg, #r :neg",
                            "ExpressionAttributeNames": {"#c": "committed", "#r": "reserved"},
                            "ExpressionAttributeValues": {":neg": -Decimal(item["usd"])}}},
            ])
            return True
        except ClientError as exc:
            if not _conditional_failed(exc):
                raise
            return False

    def reserve(self, usd: float, owner: str, ttl_s: float, ceiling_usd: float) -> Reservation | None:
        at = time.time()
        for item in self._reservations():  # expired ones (their run died) give their amount back first
            if float(item["expires"]) <= at:
                self._drop(item)
        if usd > ceiling_usd:
            return None
        r = Reservation(uuid.uuid4().hex, owner, usd, at + ttl_s, day_of(at))
        try:
            self.client.transact_write_items(TransactItems=[
                {"Put": {"TableName": self.table.name,
                         "Item": {"feed_slug": RESERVATION, "guid_key": r.id, "owner": owner, "usd": _to_item(usd),
                                  "expires": _to_item(r.expires), "day": r.day},
                         "ConditionExpression": "attribute_not_exists(guid_key)"}},
                {"Update": {"TableName": self.table.name, "Key": {"feed_slug": SPEND_DAY, "guid_key": r.day},
                            "UpdateExpression": "ADD #c :x, #r :x",
                            "ConditionExpression": "attribute_not_exists(#c) OR #c <= :limit",
                            "ExpressionAttributeNames": {"#c": "committed", "#r": "reserved"},
                            "ExpressionAttributeValues": {":x": _to_item(float(usd)),
                                                          ":limit": _to_item(float(ceiling_usd - usd))}}},
            ])
        except ClientError as exc:
            if _conditional_failed(exc):
                return None
            raise
        return r

    def release(self, reservation_id: str) -> bool:
        item = self.table.get_item(Key={"feed_slug": RESERVATION, "guid_key": reservation_id},
                                   ConsistentRead=True).get("Item")
        return bool(item) and self._drop(item)

    def reserved(self) -> float:
        at = time.time()
        return float(sum(Decimal(i["usd"]) for i in self._reservations() if float(i["expires"]) > at))

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
