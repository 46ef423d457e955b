"""Claims on an episode's stage across processes and machines: a lease in the checkpoint store, renewed while held.

The protocol every stage that must run once per episode follows (download, transcribe):

1. ``Claims.claim(pk)``: one compare-and-swap in the checkpoint store (a SQLite transaction locally,
   a DynamoDB conditional write on AWS) sets the stage ``running`` for this owner until
   ``now + lease_s``; of two tasks claiming at once exactly one gets it.
2. Refused because another owner holds a live lease, or because the stage is already done at this
   code version: the episode is skipped (``skip_for``: a ``StepSkipped``, no failure of the run).
3. While held, a thread renews the lease every ``lease_s / 3``; a killed task renews nothing, so
   its lease runs out and the next claim takes the episode over (``launch.py`` also releases a
   dead run's claims at once when it sees the run died).
4. The holder ends the claim by writing the stage's outcome (done or failed clears the owner) and
   ``release(pk)``.

A later stage reads the earlier one's outcome before it starts (``upstream_gate``): done, it runs;
held by another run, the episode is skipped (that run makes its later stages too); else it is
counted as failed upstream. A stage that needs no claim records its own outcome (``run_stage``).

Dagster-free, like the rest of store/.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from typing import Callable, TypeVar

from podinsight_dagster.errors import StepError, StepSkipped
from podinsight_dagster.store.checkpoints import DONE, CheckpointStore

T = TypeVar("T")

LEASE_S = 600.0  # the default lease (PODINSIGHT_CLAIM_LEASE_SEC); renewed every third of it while held


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def skip_for(pk: str, why: str) -> StepSkipped | None:
    """The skip for a refused claim: held by someone else, or already done (None: a refusal that is an error)."""
    if why.startswith("claimed by"):
        return StepSkipped(f"{pk}: skipped, {why}", held_elsewhere=True)
    if why.startswith("already done"):
        return StepSkipped(f"{pk}: skipped, {why}")
    return None


class Claims:
    """The claims ``owner`` holds on ``stage`` of some episodes, renewed until released (a context manager).

    ``lost`` collects the episodes whose renewal found the claim in someone else's hands (its lease ran
    out while this holder was stalled and another task took it over): the holder should not finish them.
    """

    def __init__(self, checkpoints: CheckpointStore, stage: str, owner: str, lease_s: float = LEASE_S):
        self.checkpoints, self.stage, self.owner, self.lease_s = checkpoints, stage, owner, lease_s
        self.held: set[str] = set()
        self.lost: set[str] = set()
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{stage}-leases", daemon=True)

    def claim(self, pk: str, *, unless_done_version: str | None = None) -> str | None:
        """Take ``pk``'s stage (None) and keep renewing it until ``release``; else why not."""
        why = self.checkpoints.claim(pk, self.stage, self.owner, self.lease_s, unless_done_version=unless_done_version)
        if why is None:
            with self.lock:
                self.held.add(pk)
                self.lost.discard(pk)
        return why

    def holds(self, pk: str) -> bool:
        with self.lock:
            return pk in self.held

    def release(self, pk: str) -> None:
        """Stop renewing ``pk`` (its stage's outcome, written by the holder, has cleared the owner)."""
        with self.lock:
            self.held.discard(pk)

    def _run(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            with self.lock:
                held = list(self.held)
            for pk in held:
                try:
                    kept = self.checkpoints.renew(pk, self.stage, self.owner, self.lease_s)
                except Exception:  # noqa: BLE001 - a missed renewal is retried next period
                    continue
                if not kept:
                    with self.lock:
                        if pk in self.held:
                            self.lost.add(pk)

    def __enter__(self) -> "Claims":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def upstream_gate(checkpoints: CheckpointStore, pk: str, stage: str, label: str,
                  left_to_others: frozenset[str] = frozenset()) -> None:
    """Raise unless ``stage`` of ``pk`` is done: StepSkipped while someone else holds it (or held it when an
    earlier step of this run got to it: ``left_to_others``), else StepError."""
    if pk in left_to_others:
        raise StepSkipped(f"{pk}: skipped, another run held it when this run got to it and makes it",
                          held_elsewhere=True)
    st = checkpoints.stage(pk, stage)
    if st.status == DONE:
        return
    if st.held():
        raise StepSkipped(f"{pk}: skipped, {label} is being made by {st.owner}", held_elsewhere=True)
    why = f": {st.last_error}" if st.last_error else ""
    raise StepError(f"{pk}: {label} is {st.status}{why} (upstream failed, not attempted)")


def run_stage(checkpoints: CheckpointStore, pk: str, stage: str, work: Callable[[], T], *,
              marks_done: bool = True) -> T:
    """``work()`` with ``stage`` of ``pk`` recorded: running, then done (unless ``marks_done`` is False: the
    work records it itself), or failed with the error (re-raised), which later stages read."""
    checkpoints.mark_stage(pk, stage, "running")
    try:
        out = work()
    except Exception as exc:
        checkpoints.mark_failed(pk, stage, str(exc), retryable=getattr(exc, "retryable", False))
        raise
    if marks_done:
        checkpoints.mark_stage(pk, stage, DONE)
    return out
