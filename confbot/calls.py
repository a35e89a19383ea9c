"""`CallManager`: the bot's side of every call this process runs.

It ties one call's connector (the built-in room's WHIP ingest, or a Janus VideoRoom) to the
call's `CallPipeline`, and the pipeline's samples to the store's `SampleWriter` and the
`FeedBroker`. It records joins, leaves, consent and status changes in the store, and publishes
each one on the feed as the same message that a replay from SQL gives.

    manager = CallManager(settings=..., db=..., writer=..., broker=..., worker=..., ingest=...)
    new = await manager.create_call(title="Screening", connector={"type": "room"},
                                    sample_fps=2.0, consent="all")
    ...
    await manager.end_call(new.call.id)
    await manager.close()

Database calls run in threads, so a slow database never stalls the media path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from aiortc import MediaStreamTrack, RTCIceServer

from confbot.config import Settings
from confbot.errors import ConfbotError, ConnectorError, StoreError
from confbot.feed.broker import FeedBroker
from confbot.feed.messages import call_message, participant_message
from confbot.pipeline.inference import InferenceWorker
from confbot.pipeline.runner import CallPipeline
from confbot.pipeline.sample import EmotionSample
from confbot.rtc.janus import JanusConnector
from confbot.rtc.whip import WhipIngest
from confbot.store import calls as call_store
from confbot.store import participants as participant_store
from confbot.store.db import Database
from confbot.store.events import ANALYSIS, add_event, call_t_ms, epoch_ms
from confbot.store.models import Call
from confbot.store.writer import SampleWriter

log = logging.getLogger(__name__)

# How long a participant's join is retried while the database is away; samples wait meanwhile.
JOIN_RETRY_S = 60.0
RESTART_REASON = "the server stopped while the call was running"


class Connector(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


@dataclass
class ActiveCall:
    """A call this process is running."""

    call_id: str
    source: str  # "whip" or "janus"
    consent_mode: str
    started_wall_ms: int
    pipeline: CallPipeline
    started_at: datetime | None = None  # set once the call is live, as stored
    connector: Connector | None = None
    names: dict[str, str] = field(default_factory=dict)
    consent: dict[str, bool] = field(default_factory=dict)
    present: set[str] = field(default_factory=set)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    ending: bool = False


class CallManager:
    """Starts and ends calls, and routes each participant's media, samples and events."""

    def __init__(self, *, settings: Settings, db: Database, writer: SampleWriter, broker: FeedBroker,
                 worker: InferenceWorker, ingest: WhipIngest,
                 janus_factory: Callable[..., Connector] | None = None,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._db = db
        self._writer = writer
        self._broker = broker
        self._worker = worker
        self._ingest = ingest
        self._janus_factory = janus_factory or JanusConnector
        self._wall_clock = wall_clock
        self._calls: dict[str, ActiveCall] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.samples_out = 0

    # ------------------------------------------------------------------ lifecycle

    async def recover(self) -> int:
        """Mark calls that an earlier process left running as failed; returns how many."""
        stale: list[Call] = []
        for status in ("connecting", "live"):
            stale += await asyncio.to_thread(call_store.list_calls, self._db, status=status, limit=10_000)
        for call in stale:
            await asyncio.to_thread(call_store.set_call_status, self._db, call.id, "failed", RESTART_REASON)
        if stale:
            log.warning("marked %d call(s) left running by an earlier process as failed", len(stale))
        return len(stale)

    async def close(self) -> None:
        """End every running call (the bot leaves each one)."""
        for call_id in list(self._calls):
            await self.end_call(call_id, status="ended")

    @property
    def active(self) -> dict[str, ActiveCall]:
        return self._calls

    # ------------------------------------------------------------------ calls

    async def create_call(self, *, title: str, connector: dict[str, Any], sample_fps: float,
                          consent: str) -> call_store.NewCall:
        """Store the call and send the bot into it. Raises ValueError for bad settings and
        `StoreError` if the database refuses; a connector that cannot join turns the call
        `failed` with the reason, shortly after this returns."""
        new = await asyncio.to_thread(call_store.create_call, self._db, title=title,
                                      connector=connector, sample_fps=sample_fps, consent=consent)
        call_id = new.call.id
        kind = connector["type"]
        if kind == "room":
            call = await self._set_status(call_id, "live")
            active = self._activate(call, source="whip")
            self._ingest.open_call(call_id, on_track=self._on_track_for(active),
                                   on_leave=self._on_leave_for(active))
            return call_store.NewCall(call=call, host_token=new.host_token)
        # Janus: the join runs in the background; the call is "connecting" until it is in.
        self._spawn(self._run_janus(new.call, connector))
        return new

    async def _run_janus(self, call: Call, spec: dict[str, Any]) -> None:
        call_id = call.id
        active: ActiveCall | None = None
        try:
            # The call's clock starts when the bot is in the room; the pipeline needs it first,
            # so take "now" and make the status change carry the same instant.
            active = self._activate(call, source="janus", started_wall_ms=self._now_ms())
            connector = self._janus_factory(
                url=spec["url"], room=int(spec["room"]), pin=spec.get("pin"),
                display_name=self._settings.bot.display_name,
                on_track=self._on_track_for(active), on_leave=self._on_leave_for(active),
                on_failed=self._on_failed_for(active), call_id=call_id,
                ice_servers=[RTCIceServer(urls=url) for url in self._settings.rtc.stun_servers],
            )
            active.connector = connector
            await connector.start()
        except (ConnectorError, OSError, ValueError) as exc:
            await self._fail(call_id, f"could not join the Janus room: {exc}")
            return
        except Exception as exc:  # a connector bug must not leave the call "connecting" forever
            log.exception("call %s: Janus join crashed", call_id)
            await self._fail(call_id, f"could not join the Janus room: {type(exc).__name__}: {exc}")
            return
        if active.ending:
            return
        await self._set_status(call_id, "live", at_ms=active.started_wall_ms)

    def _activate(self, call: Call, *, source: str, started_wall_ms: int | None = None) -> ActiveCall:
        if started_wall_ms is None:
            assert call.started_at is not None
            started_wall_ms = epoch_ms(call.started_at)
        call_id = call.id

        def on_samples(samples: list[EmotionSample]) -> None:
            self.samples_out += len(samples)
            # The feed first, in the same loop step as the writer: a replaying client then
            # sees each sample exactly once (confbot.feed.replay).
            self._broker.publish_samples(call_id, samples)
            self._writer.submit(samples)

        pipeline = CallPipeline(
            call_id=call_id, started_wall_ms=started_wall_ms, worker=self._worker,
            sample_fps=call.sample_fps, on_samples=on_samples,
            max_frame_pixels=self._settings.pipeline.max_frame_pixels,
        )
        active = ActiveCall(call_id=call_id, source=source, consent_mode=call.consent,
                            started_wall_ms=started_wall_ms, pipeline=pipeline,
                            started_at=call.started_at)
        self._calls[call_id] = active
        self._spawn(pipeline.start())
        return active

    async def end_call(self, call_id: str, *, status: str = "ended", reason: str | None = None) -> Call:
        """The bot leaves the call and the call becomes `status` ("ended" or "failed").
        Ending a call that is not running here only updates its status."""
        active = self._calls.pop(call_id, None)
        if active is not None and not active.ending:
            active.ending = True
            if active.source == "whip":
                await self._ingest.close_call(call_id)
            elif active.connector is not None:
                try:
                    await active.connector.stop()
                except Exception:
                    log.exception("call %s: error while leaving the Janus room", call_id)
            for pid in list(active.present):
                await self._participant_left(active, pid)
            await active.pipeline.close()
            for task in list(active.tasks):
                task.cancel()
        call = await self._set_status(call_id, status, reason)
        self._broker.end_call(call_id)
        return call

    async def _fail(self, call_id: str, reason: str) -> None:
        log.warning("call %s failed: %s", call_id, reason)
        await self.end_call(call_id, status="failed", reason=reason)

    async def _set_status(self, call_id: str, status: str, reason: str | None = None, *,
                          at_ms: int | None = None) -> Call:
        at = datetime.fromtimestamp(at_ms / 1000, UTC) if at_ms is not None else self._now()
        before = await asyncio.to_thread(call_store.get_call, self._db, call_id)
        call = await asyncio.to_thread(call_store.set_call_status, self._db, call_id, status, reason, at=at)
        active = self._calls.get(call_id)
        if active is not None and call.started_at is not None:
            active.started_at = call.started_at
        if before is not None and before.status == call.status:
            return call  # nothing changed, nothing stored: nothing to feed
        self._broker.publish(call_id, call_message(call_id=call_id, status=call.status,
                                                   reason=call.failure_reason, t_ms=call_t_ms(call, at),
                                                   wall_time_ms=epoch_ms(at)))
        if call.status == "live":
            await self._record_analysis(call_id, at)
        return call

    async def _record_analysis(self, call_id: str, at: datetime) -> None:
        """Store what scores the call's faces (the model "auto" chose, the detector). A database
        that refuses costs this record only: the call goes on."""
        try:
            await asyncio.to_thread(add_event, self._db, call_id, ANALYSIS,
                                    data=self._worker.analysis, at=at)
        except ConfbotError as exc:
            log.warning("call %s: could not record which model scores it: %s", call_id, exc)

    # ------------------------------------------------------------------ participants

    def _on_track_for(self, active: ActiveCall) -> Callable[[str, str, MediaStreamTrack], Any]:
        async def on_track(participant_id: str, display_name: str, track: MediaStreamTrack) -> None:
            if active.ending:
                track.stop()
                return
            consent = False
            if active.source == "whip":
                session = self._ingest.session_of(active.call_id, participant_id)
                consent = bool(session is not None and session.consent)
            await self._participant_joined(active, participant_id, display_name, consent)
            analyzed = self._may_analyze(active, participant_id)
            active.pipeline.add_track(participant_id, track, analyzed=analyzed)
        return on_track

    def _on_leave_for(self, active: ActiveCall) -> Callable[[str], Any]:
        async def on_leave(participant_id: str) -> None:
            await active.pipeline.remove_participant(participant_id)
            await self._participant_left(active, participant_id)
        return on_leave

    def _on_failed_for(self, active: ActiveCall) -> Callable[[str], Any]:
        async def on_failed(reason: str) -> None:
            if not active.ending:
                self._spawn(self._fail(active.call_id, reason))
        return on_failed

    def _may_analyze(self, active: ActiveCall, participant_id: str) -> bool:
        return active.consent_mode == "all" or active.consent.get(participant_id, False)

    async def _participant_joined(self, active: ActiveCall, pid: str, name: str, consent: bool) -> None:
        active.names[pid] = name
        active.present.add(pid)
        if consent:
            active.consent[pid] = True
        at = self._now()
        deadline = time.monotonic() + JOIN_RETRY_S
        while True:
            try:
                row = await asyncio.to_thread(
                    participant_store.add_participant, self._db, active.call_id, pid,
                    display_name=name, source=active.source, consent_given=consent, at=at)
                active.consent[pid] = bool(row.consent_given)
                break
            except StoreError as exc:
                if time.monotonic() > deadline:
                    log.error("call %s: could not record participant %s: %s", active.call_id, pid, exc)
                    break
                log.warning("call %s: recording participant %s failed (%s); retrying",
                            active.call_id, pid, exc)
                await asyncio.sleep(2.0)
        self._broker.publish(active.call_id, participant_message(
            call_id=active.call_id, participant_id=pid, display_name=name, event="joined",
            t_ms=_t_ms(active, at), wall_time_ms=epoch_ms(at)))

    async def _participant_left(self, active: ActiveCall, pid: str) -> None:
        if pid not in active.present:
            return
        active.present.discard(pid)
        at = self._now()
        try:
            await asyncio.to_thread(participant_store.mark_participant_left, self._db, active.call_id, pid,
                                    at=at)
        except Exception as exc:  # the leave is still fed; the row keeps no left_at
            log.warning("call %s: could not record that %s left: %s", active.call_id, pid, exc)
        self._broker.publish(active.call_id, participant_message(
            call_id=active.call_id, participant_id=pid, display_name=active.names.get(pid, pid),
            event="left", t_ms=_t_ms(active, at), wall_time_ms=epoch_ms(at)))

    async def set_consent(self, call_id: str, participant_id: str, given: bool) -> None:
        """Record a participant's consent (or its withdrawal); analysis follows at once."""
        at = self._now()
        before = await asyncio.to_thread(participant_store.get_participant, self._db, call_id, participant_id)
        row = await asyncio.to_thread(participant_store.set_consent, self._db, call_id, participant_id,
                                      given, at=at)
        active = self._calls.get(call_id)
        if active is None:
            return
        active.consent[participant_id] = given
        active.pipeline.set_analyzed(participant_id, self._may_analyze(active, participant_id))
        if before is not None and before.consent_given == given and before.consent_at is not None:
            return  # unchanged: the store recorded no event
        self._broker.publish(call_id, participant_message(
            call_id=call_id, participant_id=participant_id, display_name=row.display_name,
            event="consent_given" if given else "consent_withdrawn", t_ms=_t_ms(active, at),
            wall_time_ms=epoch_ms(at)))

    def authorize_host(self, call_id: str, token: str | None) -> bool:
        """True if `token` is call `call_id`'s host token (a database read: call it in a thread)."""
        return token is not None and call_store.verify_host_token(self._db, call_id, token)

    def latest(self, call_id: str, participant_id: str) -> dict[str, Any] | None:
        """The participant's newest analyzed faces, for the room page's own-emotion overlay."""
        active = self._calls.get(call_id)
        if active is None:
            return None
        latest = active.pipeline.latest(participant_id)
        if latest is None:
            return None
        return {"t_ms": latest.t_ms, "frame_width": latest.frame_width,
                "frame_height": latest.frame_height,
                "samples": [s.to_message() for s in latest.samples]}

    # ------------------------------------------------------------------ helpers

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._wall_clock(), UTC)

    def _now_ms(self) -> int:
        return int(self._wall_clock() * 1000)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    def stats(self) -> dict[str, Any]:
        return {"active_calls": len(self._calls), "samples_out": self.samples_out}


def _t_ms(active: ActiveCall, at: datetime) -> int:
    """Call time of `at`, computed as the store computes it for the event it records."""
    if active.started_at is None or at <= active.started_at:
        return 0
    return int((at - active.started_at).total_seconds() * 1000)

