"""Pruning: deleting old events without changing what the log says.

:meth:`Pruner.prune` deletes, for each connection, the oldest events of its log that are older
than a cutoff, in batches of one short transaction each:

- A registered connection's batch is taken under its row lock (its reports wait for one batch,
  never for the whole run). The batch is replayed through the state machine from the row's
  checkpoint, so the checkpoint after the newest deleted event can be stored on the row
  (``pruned_through``, ``checkpoint``): ``verify`` replays the rest of the log from there. A
  batch never ends between the events one step of the machine wrote together.
- The log of a connection that was unregistered or removed (no row holds its id any more) is
  deleted whole once its newest event is older than the cutoff.

Every deleted event is folded into ``brama_rollups`` (per connection and hour) in the same
transaction, so lifetime totals (kept on the row) and totals over whole hours (rollups plus
the events left) stay exact. A run that stops half-way (an error, a kill) leaves every
committed batch consistent; the next run resumes where it stopped.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, exists, insert, select, update
from sqlalchemy.engine import Connection

from brama_sql.circuit import Kind, State
from brama_sql.records import Event
from brama_sql.replay import Checkpoint, Replay
from brama_sql.rows import event_record, settings_of
from brama_sql.schema import connections, events, rollups, stored_scope
from brama_sql.store import Store, fold

logger = logging.getLogger("brama_sql")

BATCH_SIZE = 500
"""Events deleted per transaction (a registered connection's row stays locked for one batch)."""


class _Contended(Exception):
    """Another prune deleted part of this batch first: roll back, leave the rest to it."""


@dataclass
class _Bucket:
    """One hour of one connection's deleted events, as ``brama_rollups`` counts them."""

    identifier: str
    scope: str
    first_event_id: int
    last_event_id: int
    events: int = 0
    successes: int = 0
    failures: int = 0
    transitions: int = 0
    trips: int = 0

    def add(self, event: Event) -> None:
        self.events += 1
        self.successes += event.kind is Kind.SUCCESS
        self.failures += event.kind is Kind.FAILURE
        self.transitions += event.kind is Kind.TRANSITION
        self.trips += event.kind is Kind.TRANSITION and event.to_state is State.OPEN
        self.first_event_id = min(self.first_event_id, event.id)
        self.last_event_id = max(self.last_event_id, event.id)


class Pruner:
    """Deletes old events in the transactions of ``store``, reading the time from its clock."""

    def __init__(self, store: Store, batch_size: int = BATCH_SIZE) -> None:
        self.run = store.run
        self.now = store.now
        self.batch_size = batch_size

    def prune(self, older_than: timedelta) -> int:
        """Delete every event older than ``older_than`` (from now) that may go; return how
        many were deleted."""

        def plan(conn: Connection) -> tuple[datetime, list[int], list[int]]:
            cutoff = self.now(conn) - older_than
            old = events.c.occurred_at < cutoff
            has_old = exists().where(events.c.connection_id == connections.c.id, old)
            live = list(
                conn.execute(
                    select(connections.c.id).where(has_old).order_by(connections.c.id)
                ).scalars()
            )
            no_row = ~exists().where(connections.c.id == events.c.connection_id)
            gone = list(
                conn.execute(
                    select(events.c.connection_id)
                    .where(old, no_row)
                    .distinct()
                    .order_by(events.c.connection_id)
                ).scalars()
            )
            return cutoff, live, gone

        cutoff, live, gone = self.run("prune", plan, write=False)
        deleted = 0
        for connection_id, batch in [(i, self._live_batch) for i in live] + [
            (i, self._gone_batch) for i in gone
        ]:
            while True:
                step = functools.partial(batch, connection_id=connection_id, cutoff=cutoff)
                try:
                    count, more = self.run("prune", step, write=True)
                except _Contended:
                    break
                deleted += count
                if not more:
                    break
        logger.info("prune() deleted %d events older than %s", deleted, cutoff.isoformat())
        return deleted

    def _live_batch(
        self, conn: Connection, connection_id: int, cutoff: datetime
    ) -> tuple[int, bool]:
        """Delete the next batch of a registered connection's old events under its row lock;
        how many, and whether more may follow."""
        row = conn.execute(
            select(connections).where(connections.c.id == connection_id).with_for_update()
        ).one_or_none()
        if row is None:
            return 0, False  # removed meanwhile: its log is pruned whole by a later run
        fold(conn, row)  # the row's tallies must count every event deleted
        found = [
            event_record(found)
            for found in conn.execute(
                select(events)
                .where(events.c.connection_id == row.id, events.c.id > row.pruned_through)
                .order_by(events.c.id)
                .limit(self.batch_size)
            )
        ]
        start = None if row.checkpoint is None else Checkpoint.from_json(row.checkpoint)
        replaying = Replay(settings_of(row), start, _lookahead(conn, row.id, found))
        doomed: list[Event] = []
        checkpoint = None
        young = False
        for index, event in enumerate(found):
            if event.occurred_at >= cutoff:
                young = True
                break
            replaying.feed(event)
            if replaying.settled:
                doomed = found[: index + 1]
                checkpoint = replaying.checkpoint()
        if checkpoint is None:
            return 0, False
        _delete(conn, doomed)
        _fold(conn, row.id, doomed)
        conn.execute(
            update(connections)
            .where(connections.c.id == row.id)
            .values(pruned_through=doomed[-1].id, checkpoint=checkpoint.as_json())
        )
        return len(doomed), not young and len(found) == self.batch_size

    def _gone_batch(
        self, conn: Connection, connection_id: int, cutoff: datetime
    ) -> tuple[int, bool]:
        """Delete the next batch of the log of a connection no row holds any more, if its
        newest event is older than ``cutoff``; how many, and whether more may follow."""
        newest = conn.execute(
            select(events.c.occurred_at)
            .where(events.c.connection_id == connection_id)
            .order_by(events.c.occurred_at.desc())
            .limit(1)
        ).scalar()
        if newest is None or newest >= cutoff:
            return 0, False
        if conn.execute(select(connections.c.id).where(connections.c.id == connection_id)).first():
            return 0, False
        doomed = [
            event_record(found)
            for found in conn.execute(
                select(events)
                .where(events.c.connection_id == connection_id)
                .order_by(events.c.id)
                .limit(self.batch_size)
            )
        ]
        _delete(conn, doomed)
        _fold(conn, connection_id, doomed)
        return len(doomed), len(doomed) == self.batch_size


def _lookahead(conn: Connection, connection_id: int, found: Sequence[Event]) -> list[Event]:
    """The events a registration logged by a release before revision 0002 needs to find the
    settings it started with: the batch and every later ``configured`` event."""
    legacy = [
        event
        for event in found
        if event.kind is Kind.REGISTERED and not (event.details or {}).get("settings")
    ]
    if not legacy:
        return list(found)
    later = conn.execute(
        select(events)
        .where(
            events.c.connection_id == connection_id,
            events.c.kind == Kind.CONFIGURED.value,
            events.c.id > found[-1].id,
        )
        .order_by(events.c.id)
    )
    return [*found, *(event_record(row) for row in later)]


def _delete(conn: Connection, doomed: Sequence[Event]) -> None:
    """Delete the events by primary key; raise :class:`_Contended` if another prune deleted
    some of them first (this transaction then rolls back)."""
    ids = [event.id for event in doomed]
    deleted = conn.execute(delete(events).where(events.c.id.in_(ids))).rowcount
    if deleted != len(ids):
        raise _Contended


def _fold(conn: Connection, connection_id: int, doomed: Sequence[Event]) -> None:
    """Add the deleted events to their connection's hourly rollups. Two prunes never fold
    the same connection at once: one holds its row lock, or the rows of the events it deletes."""
    buckets: dict[datetime, _Bucket] = {}
    for event in doomed:
        hour = event.occurred_at.replace(minute=0, second=0, microsecond=0)
        bucket = buckets.get(hour)
        if bucket is None:
            bucket = buckets[hour] = _Bucket(
                event.identifier, stored_scope(event.scope), event.id, event.id
            )
        bucket.add(event)
    for hour, bucket in buckets.items():
        key = (rollups.c.connection_id == connection_id) & (rollups.c.hour == hour)
        existing = conn.execute(select(rollups).where(key).with_for_update()).one_or_none()
        if existing is None:
            conn.execute(
                insert(rollups).values(
                    connection_id=connection_id,
                    hour=hour,
                    identifier=bucket.identifier,
                    scope=bucket.scope,
                    events=bucket.events,
                    successes=bucket.successes,
                    failures=bucket.failures,
                    transitions=bucket.transitions,
                    trips=bucket.trips,
                    first_event_id=bucket.first_event_id,
                    last_event_id=bucket.last_event_id,
                )
            )
            continue
        conn.execute(
            update(rollups)
            .where(key)
            .values(
                events=existing.events + bucket.events,
                successes=existing.successes + bucket.successes,
                failures=existing.failures + bucket.failures,
                transitions=existing.transitions + bucket.transitions,
                trips=existing.trips + bucket.trips,
                first_event_id=min(existing.first_event_id, bucket.first_event_id),
                last_event_id=max(existing.last_event_id, bucket.last_event_id),
            )
        )
