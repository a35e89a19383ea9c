"""`replay_then_live`: what a feed client missed since `since_ms`, from SQL, then the live feed.

How nothing is lost and nothing repeated:

1. Subscribe to the broker first, with `since_ms`: from then on every published message is
   queued, and the queue starts with the broker's recent messages that SQL may not hold yet
   (the store writer batches its inserts).
2. Read the call's events and samples with `t_ms >= since_ms` from SQL (in a worker thread,
   samples a page at a time) and yield them in `t_ms` order.
3. Yield the queued and then the live messages, skipping each one that was already replayed.

A sample is published no later than it is written, so a replayed sample that was also
published is already queued when its page has been read: only those are remembered for
skipping, which keeps memory bounded by the queue. Events (joins, leaves, status) may be
published just after they are written, so the replayed ones are always remembered (a call
has few).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncGenerator, Hashable
from typing import Any

from confbot.feed.broker import FeedBroker
from confbot.feed.messages import event_message, message_key
from confbot.store.calls import FINAL_STATUSES, get_call
from confbot.store.db import Database
from confbot.store.events import events_since
from confbot.store.participants import list_participants
from confbot.store.samples import page_samples

log = logging.getLogger(__name__)

REPLAY_PAGE_SAMPLES = 500


async def replay_then_live(db: Database, broker: FeedBroker, call_id: str, since_ms: int, *,
                           page_size: int = REPLAY_PAGE_SAMPLES) -> AsyncGenerator[dict[str, Any], None]:
    """The call's messages with `t_ms >= since_ms` from SQL, in `t_ms` order, then the live ones.

    The bound is inclusive: a client that saw messages at exactly `since_ms` may see them again.
    Ends after the call has ended (at once, after the replay, for a call that had already ended
    or failed). Raises `FeedInterruptedError` when the live part lags or the broker shuts down,
    `StoreError` when the database cannot be read, ValueError for a negative `since_ms`.
    Close it (`aclosing`) to release the subscription early.
    """
    if since_ms < 0:
        raise ValueError(f"since_ms must be 0 or more, got {since_ms}")
    subscription = broker.subscribe(call_id, since_ms=since_ms)
    try:
        final, events = await asyncio.to_thread(_read_events, db, call_id, since_ms)
        skip: Counter[Hashable] = Counter()
        for message in events:
            skip[message_key(message)] += 1
        replayed = 0
        next_event = 0
        after_id: int | None = None
        while True:
            page = await asyncio.to_thread(page_samples, db, call_id, since_ms=since_ms, limit=page_size,
                                           after_id=after_id)
            queued = {message_key(m) for m in subscription.pending()}
            for row in page.rows:
                message = row.to_sample().to_message()
                while next_event < len(events) and events[next_event]["t_ms"] <= message["t_ms"]:
                    yield events[next_event]
                    next_event += 1
                key = message_key(message)
                if key in queued:
                    skip[key] += 1
                replayed += 1
                yield message
            if page.next_after_id is None:
                break
            after_id = page.next_after_id
        for message in events[next_event:]:
            yield message
        log.debug("call %s: replayed %d samples and %d events since %d ms", call_id, replayed,
                  len(events), since_ms)
        if final:
            # The call was over before we looked: what the broker still holds is all that is left.
            for message in subscription.pending():
                if not _skipped(message, skip):
                    yield message
            return
        async for message in subscription:
            if not _skipped(message, skip):
                yield message
    finally:
        subscription.close()


def _read_events(db: Database, call_id: str, since_ms: int) -> tuple[bool, list[dict[str, Any]]]:
    """Whether the call is over, and its event messages since `since_ms` in `t_ms` order."""
    call = get_call(db, call_id)
    final = call is not None and call.status in FINAL_STATUSES
    names = {p.id: p.display_name for p in list_participants(db, call_id)}
    messages = [event_message(row, display_names=names) for row in events_since(db, call_id, since_ms)]
    return final, [m for m in messages if m is not None]


def _skipped(message: dict[str, Any], skip: Counter[Hashable]) -> bool:
    """True (and forget it) if the message was replayed already."""
    key = message_key(message)
    if key is None or skip[key] <= 0:
        return False
    skip[key] -= 1
    if not skip[key]:
        del skip[key]
    return True
