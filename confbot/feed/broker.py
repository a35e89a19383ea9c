"""`FeedBroker`: in-process fan-out of each call's feed messages to its subscribers (websockets).

    pipeline --publish_samples()--> FeedBroker --(one bounded queue per subscriber)--> websocket
    store/API --publish()---------/     |
                                        +-- once a second: an `audience` message per call

`publish` and `publish_samples` only append to in-memory queues: they never wait, never raise,
and cost the same however slow a subscriber is. A subscriber whose queue fills up is ended
as "lagged" (`FeedInterruptedError`); its websocket closes with a code that tells the client
to reconnect with `since_ms`, and the replay from SQL fills what it missed.

The broker also keeps the last `history_ms` of each call's messages, so a subscriber that
asks for `since_ms` also gets the recent messages that are not in SQL yet (the store writer
batches its inserts).

Every method must be called from the event loop's thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

from confbot.config import FeedConfig
from confbot.errors import ConfbotError
from confbot.feed.messages import MESSAGE_TYPES
from confbot.pipeline.sample import EmotionSample
from face_core.emotions import EMOTIONS

log = logging.getLogger(__name__)

EndReason = Literal["call_ended", "lagged", "shutdown", "closed"]
AUDIENCE_WINDOW_MS = 2000
HISTORY_MS = 10_000
ENDED_CALLS_REMEMBERED = 10_000


class FeedInterruptedError(ConfbotError):
    """The live feed of a call stopped before the call ended; reconnect with `since_ms`.

    `reason` is "lagged" (the subscriber fell `client_queue_max` messages behind) or
    "shutdown" (the broker was closed).
    """

    def __init__(self, call_id: str, reason: EndReason) -> None:
        self.call_id = call_id
        self.reason = reason
        what = ("the client fell too far behind" if reason == "lagged" else "the server is shutting down")
        super().__init__(f"live feed of call {call_id} interrupted: {what}")


@dataclass(frozen=True)
class FeedStats:
    """Counts since the broker was made.

    subscribers: open subscriptions now. published: messages accepted for fan-out (audience
    included). lagged: subscriptions ended because their queue was full. invalid: messages or
    samples refused as malformed or for the wrong call. dropped: messages published for a call
    that had ended or after `close()`.
    """

    subscribers: int
    published: int
    lagged: int
    invalid: int
    dropped: int


class FeedSubscription:
    """The live messages of one call, for one consumer: an async iterator of dicts.

    Iteration ends (StopAsyncIteration) after the last message once the call has ended or the
    subscription was closed, and raises `FeedInterruptedError` when the subscriber lagged or
    the broker shut down. Close it with `close()` or `async with`.
    """

    def __init__(self, broker: FeedBroker, call_id: str, number: int, *, max_pending: int,
                 initial: Sequence[dict[str, Any]] = ()) -> None:
        self.call_id = call_id
        self.number = number
        self._broker = broker
        self._queue: deque[dict[str, Any]] = deque(initial)
        self._max_pending = max_pending + len(self._queue)
        self._end: EndReason | None = None
        self._wakeup = asyncio.Event()

    @property
    def end_reason(self) -> EndReason | None:
        """Why the subscription ended, or None while it is open."""
        return self._end

    def pending(self) -> tuple[dict[str, Any], ...]:
        """The messages queued and not yet taken, oldest first (they stay queued)."""
        return tuple(self._queue)

    def close(self) -> None:
        """Stop receiving; iteration ends. Closing twice does nothing."""
        if self._end is None:
            self._finish("closed")
        self._broker._remove(self)

    def __aiter__(self) -> FeedSubscription:
        return self

    async def __anext__(self) -> dict[str, Any]:
        while True:
            end = self._end
            if end == "lagged" or end == "shutdown":
                raise FeedInterruptedError(self.call_id, end)
            if self._queue:
                return self._queue.popleft()
            if self._end is not None:
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()

    async def __aenter__(self) -> FeedSubscription:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.close()

    def _offer(self, message: dict[str, Any]) -> bool:
        """Queue `message`; False if the queue was full and the subscription is now lagged."""
        if self._end is not None:
            return True
        if len(self._queue) >= self._max_pending:
            self._finish("lagged")
            return False
        self._queue.append(message)
        self._wakeup.set()
        return True

    def _finish(self, reason: EndReason) -> None:
        if self._end is not None:
            return
        self._end = reason
        if reason != "call_ended":  # after the call ended, what is queued is still delivered
            self._queue.clear()
        self._wakeup.set()

    def __repr__(self) -> str:
        return f"FeedSubscription(call_id={self.call_id!r}, number={self.number}, end={self._end!r})"


class FeedBroker:
    """In-process fan-out of feed messages; publishing never blocks or raises.

    client_queue_max: messages a subscriber may fall behind before it is ended as lagged.
    audience_interval_s: how often `audience` messages go out (after `start()`).
    audience_window_ms: an audience message covers the latest sample of each (participant,
    face) published within this long. history_ms: how long a call's recent messages are kept
    for subscribers that ask for `since_ms` (at most `client_queue_max` of them). clock: the
    monotonic clock, in seconds, that the two windows are measured with.
    """

    def __init__(self, *, client_queue_max: int = 1000, audience_interval_s: float = 1.0,
                 audience_window_ms: int = AUDIENCE_WINDOW_MS, history_ms: int = HISTORY_MS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if client_queue_max < 1:
            raise ValueError(f"client_queue_max must be at least 1, got {client_queue_max}")
        if not audience_interval_s > 0:
            raise ValueError(f"audience_interval_s must be positive, got {audience_interval_s}")
        if audience_window_ms <= 0 or history_ms < 0:
            raise ValueError(f"audience_window_ms must be positive and history_ms not negative, got "
                             f"{audience_window_ms} and {history_ms}")
        self.client_queue_max = client_queue_max
        self.audience_interval_s = audience_interval_s
        self._audience_window_s = audience_window_ms / 1000
        self._history_s = history_ms / 1000
        self._clock = clock
        self._subscriptions: dict[str, set[FeedSubscription]] = {}
        self._faces: dict[str, dict[tuple[str, int], tuple[float, EmotionSample]]] = {}
        self._history: dict[str, deque[tuple[float, dict[str, Any]]]] = {}
        self._ended: OrderedDict[str, None] = OrderedDict()
        self._counts: Counter[str] = Counter()
        self._numbers = 0
        self._ticker: asyncio.Task[None] | None = None
        self._closed = False

    @classmethod
    def from_config(cls, config: FeedConfig, *, clock: Callable[[], float] = time.monotonic) -> FeedBroker:
        """A broker with the `[feed]` settings."""
        return cls(client_queue_max=config.client_queue_max,
                   audience_interval_s=config.audience_interval_s, clock=clock)

    async def start(self) -> None:
        """Start sending `audience` messages every `audience_interval_s`. Starting twice does nothing."""
        if self._closed:
            raise RuntimeError("the feed broker is closed")
        if self._ticker is None:
            self._ticker = asyncio.create_task(self._run_ticker(), name="feed-audience")

    async def close(self) -> None:
        """Stop the ticker and end every subscription ("shutdown"); later publishes are dropped."""
        self._closed = True
        if self._ticker is not None:
            self._ticker.cancel()
            with suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        for subscriptions in self._subscriptions.values():
            for subscription in subscriptions:
                subscription._finish("shutdown")
        self._subscriptions.clear()
        self._faces.clear()
        self._history.clear()

    async def __aenter__(self) -> FeedBroker:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    def stats(self) -> FeedStats:
        """Counts of what the broker did (see `FeedStats`)."""
        return FeedStats(subscribers=sum(len(s) for s in self._subscriptions.values()),
                         published=self._counts["published"], lagged=self._counts["lagged"],
                         invalid=self._counts["invalid"], dropped=self._counts["dropped"])

    def publish(self, call_id: str, message: dict[str, Any]) -> None:
        """Send `message` (a dict with a known `type`) to every subscriber of the call.

        Never blocks and never raises: a malformed message is logged and counted as invalid.
        """
        try:
            if not isinstance(message, dict) or message.get("type") not in MESSAGE_TYPES:
                self._counts["invalid"] += 1
                log.warning("call %s: not publishing a feed message with type %r: expected one of %s",
                            call_id, message.get("type") if isinstance(message, dict) else type(message),
                            MESSAGE_TYPES)
                return
            self._fan_out(call_id, message)
        except Exception:
            self._counts["invalid"] += 1
            log.exception("call %s: publishing a feed message failed", call_id)

    def publish_samples(self, call_id: str, samples: Sequence[EmotionSample]) -> None:
        """Send a `sample` message for each sample, and count them in the call's audience.

        Call it no later than the samples are handed to the store writer (in the same event-loop
        step), so that a replay never misses or repeats one. Never blocks and never raises:
        a sample of another call, or one that cannot be made into a message, is logged and
        counted as invalid.
        """
        for sample in samples:
            try:
                if sample.call_id != call_id:
                    self._counts["invalid"] += 1
                    log.warning("call %s: not publishing a sample of call %s", call_id, sample.call_id)
                    continue
                message = sample.to_message()
                if self._fan_out(call_id, message):
                    faces = self._faces.setdefault(call_id, {})
                    faces[(sample.participant_id, sample.face_index)] = (self._clock(), sample)
            except Exception:
                self._counts["invalid"] += 1
                log.exception("call %s: publishing a sample failed", call_id)

    def subscribe(self, call_id: str, *, since_ms: int | None = None) -> FeedSubscription:
        """A subscription to the call's messages from now on.

        With `since_ms`, it starts with the call's recent messages (the last `history_ms`) whose
        `t_ms >= since_ms`, audience messages aside. For a call that has ended (`end_call`), or
        after `close()`, the subscription is already ended.
        """
        self._numbers += 1
        initial: list[dict[str, Any]] = []
        if since_ms is not None:
            self._prune_history(call_id, self._clock())
            initial = [m for _seen, m in self._history.get(call_id, ()) if m.get("t_ms", -1) >= since_ms]
        subscription = FeedSubscription(self, call_id, self._numbers, max_pending=self.client_queue_max,
                                        initial=initial)
        if self._closed:
            subscription._finish("shutdown")
        elif call_id in self._ended:
            subscription._finish("call_ended")
        else:
            self._subscriptions.setdefault(call_id, set()).add(subscription)
            log.debug("call %s: feed subscriber %d joined (%d replayed from memory)", call_id,
                      subscription.number, len(initial))
        return subscription

    def end_call(self, call_id: str) -> None:
        """The call is over: each subscription gets what is queued, then ends.

        Publish the final `call` message first. Later messages for the call are dropped.
        """
        self._ended[call_id] = None
        self._ended.move_to_end(call_id)
        while len(self._ended) > ENDED_CALLS_REMEMBERED:
            self._ended.popitem(last=False)
        for subscription in self._subscriptions.pop(call_id, set()):
            subscription._finish("call_ended")
        self._faces.pop(call_id, None)
        self._history.pop(call_id, None)
        log.info("call %s: live feed ended", call_id)

    def audience(self, call_id: str) -> dict[str, Any] | None:
        """The call's `audience` message now, or None when no face was seen within the window.

        It covers the latest sample of each (participant, face) published in the last
        `audience_window_ms`; see docs/feed.md for the fields.
        """
        horizon = self._clock() - self._audience_window_s
        faces = [s for seen, s in self._faces.get(call_id, {}).values() if seen >= horizon]
        if not faces:
            return None
        n = len(faces)
        tops = Counter(s.top_emotion for s in faces)
        return {
            "type": "audience",
            "call_id": call_id,
            "t_ms": max(s.t_ms for s in faces),
            "wall_time_ms": max(s.wall_time_ms for s in faces),
            "faces": n,
            "participants": len({s.participant_id for s in faces}),
            "mean_valence": round(sum(s.valence for s in faces) / n, 4),
            "mean_arousal": round(sum(s.arousal for s in faces) / n, 4),
            "mean_attention": round(sum(s.attention for s in faces) / n, 4),
            "shares": {e: round(tops[e] / n, 4) for e in EMOTIONS},
        }

    def tick(self) -> None:
        """Publish one `audience` message per call with recent faces, and forget old state.

        The ticker started by `start()` calls this every `audience_interval_s`.
        """
        now = self._clock()
        horizon = now - self._audience_window_s
        for call_id in list(self._faces):
            faces = self._faces[call_id]
            for key in [k for k, (seen, _s) in faces.items() if seen < horizon]:
                del faces[key]
            if not faces:
                del self._faces[call_id]
                continue
            message = self.audience(call_id)
            if message is not None:
                self._fan_out(call_id, message)
        for call_id in list(self._history):
            self._prune_history(call_id, now)

    async def _run_ticker(self) -> None:
        while True:
            await asyncio.sleep(self.audience_interval_s)
            try:
                self.tick()
            except Exception:  # the ticker must outlive a bug in one tick
                log.exception("feed audience tick failed")

    def _fan_out(self, call_id: str, message: dict[str, Any]) -> bool:
        """Queue `message` for the call's subscribers; False if it was dropped (call over)."""
        if self._closed or call_id in self._ended:
            self._counts["dropped"] += 1
            log.debug("call %s: dropped a %s message: the feed has ended", call_id, message.get("type"))
            return False
        self._counts["published"] += 1
        if message["type"] != "audience" and self._history_s > 0:
            now = self._clock()
            history = self._history.setdefault(call_id, deque(maxlen=self.client_queue_max))
            history.append((now, message))
            self._prune_history(call_id, now)
        lagged = [s for s in self._subscriptions.get(call_id, ()) if not s._offer(message)]
        for subscription in lagged:
            self._counts["lagged"] += 1
            self._remove(subscription)
            log.warning("call %s: feed subscriber %d fell %d messages behind; ending it so that it "
                        "reconnects and replays", call_id, subscription.number, self.client_queue_max)
        return True

    def _prune_history(self, call_id: str, now: float) -> None:
        history = self._history.get(call_id)
        if history is None:
            return
        horizon = now - self._history_s
        while history and history[0][0] < horizon:
            history.popleft()
        if not history:
            del self._history[call_id]

    def _remove(self, subscription: FeedSubscription) -> None:
        subscriptions = self._subscriptions.get(subscription.call_id)
        if subscriptions is None:
            return
        subscriptions.discard(subscription)
        if not subscriptions:
            del self._subscriptions[subscription.call_id]
