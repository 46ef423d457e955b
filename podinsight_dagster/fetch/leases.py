"""Per-host limits that hold across ECS tasks: connection slots leased from the DynamoDB status table.

A host domain with limit N has N slot items (``#lease#<domain>`` / ``slot-<i>``). A request
takes a free slot with a conditional write (free: no owner, or the owner's lease expired,
so a killed task's slots come back by themselves), renews it while the body streams, and
gives it back with a conditional delete of its own ownership. Inside a task a semaphore per
domain queues threads first, so only requests that could run poll DynamoDB.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from contextlib import contextmanager
from typing import Iterator, Mapping

from botocore.exceptions import ClientError

from podinsight_dagster.fetch.limits import DEFAULT_HOST_LIMIT, HostCaps

LEASE_PREFIX = "#lease#"


class DynamoLeaseHostLimiter(HostCaps):
    """The HostLimiter for the AWS deployment (one status table shared by every task)."""

    def __init__(self, table, limits: Mapping[str, int] | None = None, default: int = DEFAULT_HOST_LIMIT,
                 lease_s: float = 60.0, poll_s: float = 0.05):
        super().__init__(limits, default)
        self.table = table
        self.lease_s = lease_s
        self.poll_s = poll_s
        self.owner = f"{uuid.uuid4().hex[:12]}"

    @contextmanager
    def slot(self, host: str) -> Iterator[None]:
        with self.queued(host) as (domain, limit):
            token = f"{self.owner}:{threading.get_ident()}:{uuid.uuid4().hex[:6]}"
            key = self._acquire(domain, limit, token)
            stop = threading.Event()
            renewer = threading.Thread(target=self._renew, args=(key, token, stop), daemon=True,
                                       name=f"lease-{domain}")
            renewer.start()
            try:
                yield
            finally:
                stop.set()
                renewer.join()
                self._release(key, token)

    def _acquire(self, domain: str, limit: int, token: str) -> dict:
        delay = self.poll_s
        while True:
            for i in random.sample(range(limit), limit):
                key = {"feed_slug": LEASE_PREFIX + domain, "guid_key": f"slot-{i}"}
                now = time.time()
                try:
                    self.table.update_item(
                        Key=key, UpdateExpression="SET #o = :me, expires = :until",
                        ConditionExpression="attribute_not_exists(#o) OR expires < :now",
                        ExpressionAttributeNames={"#o": "owner"},
                        ExpressionAttributeValues={":me": token, ":until": int((now + self.lease_s) * 1000),
                                                   ":now": int(now * 1000)})
                    return key
                except ClientError as exc:
                    if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                        raise
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 1.0)

    def _renew(self, key: dict, token: str, stop: threading.Event) -> None:
        while not stop.wait(self.lease_s / 3):
            try:
                self.table.update_item(
                    Key=key, UpdateExpression="SET expires = :until", ConditionExpression="#o = :me",
                    ExpressionAttributeNames={"#o": "owner"},
                    ExpressionAttributeValues={":me": token, ":until": int((time.time() + self.lease_s) * 1000)})
            except ClientError:
                return  # lost (expired and taken): the download goes on; the next request waits its turn

    def _release(self, key: dict, token: str) -> None:
        try:
            self.table.update_item(Key=key, UpdateExpression="REMOVE #o, expires", ConditionExpression="#o = :me",
                                   ExpressionAttributeNames={"#o": "owner"}, ExpressionAttributeValues={":me": token})
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
