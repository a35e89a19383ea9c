"""The HTTP API, the WHIP ingest, the feed websocket and the web pages, as one FastAPI app.

    app = create_app(settings)          # services start in the app's lifespan
    uvicorn.run(app, host=..., port=..., ws="websockets")

Every route about a call needs that call's host token (`Authorization: Bearer <token>`).
Creating and listing calls needs the configured API key (`X-API-Key` or Bearer) whenever one is
set; `load_settings` insists on one when the server listens beyond loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

import cv2
import numpy as np
from fastapi import Depends, FastAPI, File, Header, HTTPException, Path, Query, Request, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from confbot.api.feed import feed_router
from confbot.api.schemas import (
    AnalyzeOut,
    CallCreate,
    CallCreated,
    CallOut,
    ConsentIn,
    FaceOut,
    Health,
    ParticipantOut,
    SampleOut,
    SamplePageOut,
)
from confbot.api.whip import whip_router
from confbot.calls import CallManager
from confbot.config import Settings
from confbot.errors import ConfbotError, StoreError
from confbot.feed.broker import FeedBroker
from confbot.media_files import MAX_IMAGE_PIXELS
from confbot.memory import MemoryReleaser
from confbot.pipeline.inference import InferenceWorker
from confbot.rtc.ice import restrict_host_candidates
from confbot.rtc.whip import WhipIngest
from confbot.store import calls as call_store
from confbot.store import participants as participant_store
from confbot.store import reports
from confbot.store.db import Database
from confbot.store.errors import NotFoundError
from confbot.store.models import Call
from confbot.store.samples import page_samples
from confbot.store.writer import SampleWriter
from confbot.vision import build_analyzer
from confbot.web.routes import mount_web
from face_core.emotions import EMOTIONS

log = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
CALL_ID = Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")


@dataclass
class Services:
    """What the app runs on; built and closed by the app's lifespan."""

    settings: Settings
    db: Database
    writer: SampleWriter
    broker: FeedBroker
    worker: InferenceWorker
    ingest: WhipIngest
    manager: CallManager
    memory: MemoryReleaser


def build_services(settings: Settings, *, db: Database | None = None) -> Services:
    """Build the services (loading the model); `run_services` starts and stops them."""
    if settings.rtc.ice_host_addresses:
        restrict_host_candidates(settings.rtc.ice_host_addresses)
    db = db or Database.from_settings(settings)
    worker = InferenceWorker(build_analyzer(settings), max_batch_frames=settings.pipeline.max_batch_faces)
    broker = FeedBroker(client_queue_max=settings.feed.client_queue_max,
                        audience_interval_s=settings.feed.audience_interval_s)
    writer = SampleWriter(db, settings.store)
    ingest = WhipIngest(ice_host_addresses=settings.rtc.ice_host_addresses,
                        stun_servers=settings.rtc.stun_servers)
    manager = CallManager(settings=settings, db=db, writer=writer, broker=broker, worker=worker,
                          ingest=ingest)
    return Services(settings, db, writer, broker, worker, ingest, manager,
                    MemoryReleaser(settings.server.memory_release_s))


@contextlib.asynccontextmanager
async def run_services(svc: Services, *, close_db: bool) -> AsyncIterator[Services]:
    """Start the writer and the broker, fail calls an earlier process left running; on exit,
    end every call, flush the writer and close everything."""
    await svc.writer.start()
    await svc.broker.start()
    svc.memory.start()
    try:
        await svc.manager.recover()
    except StoreError as exc:
        log.warning("could not check for calls left running: %s", exc)
    try:
        yield svc
    finally:
        await svc.manager.close()
        await svc.ingest.close()
        stats = await svc.writer.close()
        await svc.broker.close()
        await svc.worker.close()
        await svc.memory.close()
        if stats.dropped:
            log.error("%d sample(s) could not be written and were dropped", stats.dropped)
        if close_db:
            svc.db.close()


def get_services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


Svc = Annotated[Services, Depends(get_services)]



def bearer(authorization: str | None) -> str | None:
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    return None


def require_api_key(
    svc: Svc,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> None:
    expected = svc.settings.server.api_key
    if not expected:
        return
    given = x_api_key or bearer(authorization)
    if not given or not hmac.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(401, "an API key is required to create or list calls "
                                 "(X-API-Key header or Authorization: Bearer)",
                            headers={"WWW-Authenticate": "Bearer"})


async def host_call(
    svc: Svc,
    call_id: Annotated[str, CALL_ID],
    authorization: Annotated[str | None, Header()] = None,
) -> Call:
    token = bearer(authorization)
    if token is None:
        raise HTTPException(401, "this call's host token is required: Authorization: Bearer <token>",
                            headers={"WWW-Authenticate": "Bearer"})
    call = await asyncio.to_thread(call_store.get_call, svc.db, call_id)
    if call is None:
        raise HTTPException(404, f"no call {call_id!r}")
    if not hmac.compare_digest(call_store.hash_token(token), call.host_token_hash):
        raise HTTPException(403, "the token is not this call's host token")
    return call


HostCall = Annotated[Call, Depends(host_call)]


def create_app(settings: Settings, *, db: Database | None = None) -> FastAPI:
    """The whole server as an ASGI app; its services live as long as the app's lifespan."""

    svc = build_services(settings, db=db)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with run_services(svc, close_db=db is None):
            yield

    app = FastAPI(title="confbot", version="0.1.0", lifespan=lifespan,
                  description="Sentiment bot for video calls: invite it, watch the feed, read the report.")
    app.state.services = svc

    @app.exception_handler(StoreError)
    async def store_unavailable(request: Request, exc: StoreError) -> JSONResponse:
        log.warning("%s %s: %s", request.method, request.url.path, exc)
        return JSONResponse({"detail": f"the database is unavailable: {exc}"}, status_code=503,
                            headers={"Retry-After": "5"})

    @app.exception_handler(NotFoundError)
    async def not_found(request: Request, exc: NotFoundError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    def links(call_id: str, *, room: bool) -> dict[str, Any]:
        base = public_url(settings)
        ws = "wss" + base[5:] if base.startswith("https") else "ws" + base[4:]
        return {
            "feed_url": f"{ws}/api/calls/{call_id}/feed",
            "dashboard_url": f"{base}/calls/{call_id}",
            "report_url": f"{base}/calls/{call_id}/report",
            "room_url": f"{base}/room/{call_id}" if room else None,
        }

    def call_out(call: Call) -> CallOut:
        return CallOut(id=call.id, title=call.title, status=call.status,  # type: ignore[arg-type]
                       failure_reason=call.failure_reason, connector=_public_connector(call.connector),
                       sample_fps=call.sample_fps, consent=call.consent, created_at=call.created_at,
                       started_at=call.started_at, ended_at=call.ended_at,
                       room_url=links(call.id, room=call.connector.get("type") == "room")["room_url"])

    # ------------------------------------------------------------------ calls

    @app.post("/api/calls", status_code=201, response_model=CallCreated,
              dependencies=[Depends(require_api_key)], tags=["calls"])
    async def create_call(body: CallCreate, svc: Svc) -> CallCreated:
        """Invite the bot to a call. The host token in the answer is shown only this once."""
        connector = body.connector.model_dump(mode="json", exclude_none=True)
        sample_fps = body.sample_fps or svc.settings.pipeline.sample_fps
        try:
            new = await svc.manager.create_call(title=body.title, connector=connector,
                                                sample_fps=sample_fps, consent=body.consent)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc
        return CallCreated(id=new.call.id, status=new.call.status, host_token=new.host_token,
                           **links(new.call.id, room=connector["type"] == "room"))

    @app.get("/api/calls", response_model=list[CallOut], dependencies=[Depends(require_api_key)],
             tags=["calls"])
    async def list_calls(
        svc: Svc,
        status: Annotated[str | None, Query(pattern="^(connecting|live|failed|ended)$")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> list[CallOut]:
        """Calls, newest first."""
        rows = await asyncio.to_thread(call_store.list_calls, svc.db, status=status, limit=limit,
                                       offset=offset)
        return [call_out(c) for c in rows]

    @app.get("/api/calls/{call_id}", response_model=CallOut, tags=["calls"])
    async def get_call(call: HostCall) -> CallOut:
        """The call, with its status (connecting, live, failed, ended) and failure reason."""
        return call_out(call)

    @app.delete("/api/calls/{call_id}", response_model=CallOut, tags=["calls"])
    async def end_call(call: HostCall, svc: Svc) -> CallOut:
        """End the call: the bot leaves. Ending a call that has ended changes nothing."""
        if call.status in ("failed", "ended"):
            return call_out(call)
        return call_out(await svc.manager.end_call(call.id))

    @app.get("/api/calls/{call_id}/participants", response_model=list[ParticipantOut], tags=["calls"])
    async def participants(call: HostCall, svc: Svc) -> list[ParticipantOut]:
        rows = await asyncio.to_thread(participant_store.list_participants, svc.db, call.id)
        active = svc.manager.active.get(call.id)
        return [
            ParticipantOut(id=p.id, display_name=p.display_name, source=p.source,
                           consent_given=p.consent_given, joined_at=p.joined_at, left_at=p.left_at,
                           analyzed=bool(active is not None and p.left_at is None
                                         and participant_store.may_analyze(call, p)))
            for p in rows
        ]

    @app.post("/api/calls/{call_id}/participants/{participant_id}/consent",
              response_model=ParticipantOut, tags=["calls"])
    async def consent(call: HostCall, body: ConsentIn, svc: Svc,
                      participant_id: Annotated[str, Path(min_length=1, max_length=128)]) -> ParticipantOut:
        """Record that the participant gave (or withdrew) consent to be analyzed."""
        await svc.manager.set_consent(call.id, participant_id, body.given)
        p = await asyncio.to_thread(participant_store.get_participant, svc.db, call.id, participant_id)
        assert p is not None
        return ParticipantOut(id=p.id, display_name=p.display_name, source=p.source,
                              consent_given=p.consent_given, joined_at=p.joined_at, left_at=p.left_at,
                              analyzed=participant_store.may_analyze(call, p) and p.left_at is None)

    @app.get("/api/calls/{call_id}/samples", response_model=SamplePageOut, tags=["calls"])
    async def samples(
        call: HostCall, svc: Svc,
        participant_id: str | None = None,
        since_ms: Annotated[int | None, Query(ge=0)] = None,
        until_ms: Annotated[int | None, Query(ge=0)] = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 500,
        after_id: Annotated[int | None, Query(ge=0)] = None,
    ) -> SamplePageOut:
        """Samples by time, `since_ms <= t_ms < until_ms`; follow `next_after_id` for more."""
        page = await asyncio.to_thread(page_samples, svc.db, call.id, participant_id, since_ms=since_ms,
                                       until_ms=until_ms, limit=limit, after_id=after_id)
        out = []
        for row in page.rows:
            s = row.to_sample()
            m = s.to_message()
            out.append(SampleOut(id=row.id, participant_id=s.participant_id, face_index=s.face_index,
                                 t_ms=s.t_ms, wall_time_ms=s.wall_time_ms, top_emotion=m["top_emotion"],
                                 scores=m["scores"], valence=s.valence, arousal=s.arousal,
                                 attention=s.attention, box=list(s.box)))
        return SamplePageOut(samples=out, next_after_id=page.next_after_id)

    @app.get("/api/calls/{call_id}/report", tags=["calls"],
             responses={200: {"content": {"application/json": {}, "text/csv": {}}}})
    async def report(call: HostCall, svc: Svc,
                     format: Annotated[str, Query(pattern="^(json|csv)$")] = "json") -> Response:
        """Per-participant summaries, the audience curve per second, peaks and facts."""
        if format == "csv":
            text = await asyncio.to_thread(reports.report_csv, svc.db, call.id)
            return PlainTextResponse(text, media_type="text/csv",
                                     headers={"Content-Disposition": f'attachment; filename="{call.id}.csv"'})
        return JSONResponse(await asyncio.to_thread(reports.report_json, svc.db, call.id))

    # ------------------------------------------------------------------ photo analyzer, health

    @app.post("/api/analyze", response_model=AnalyzeOut, tags=["analyze"])
    async def analyze(svc: Svc, file: Annotated[UploadFile, File(description="a photo")]) -> AnalyzeOut:
        """The faces in an uploaded photo, with boxes and emotions. Nothing is stored."""
        data = await file.read(MAX_UPLOAD_BYTES + 1)
        if len(data) > MAX_UPLOAD_BYTES:
            raise HTTPException(413, f"the photo is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MB")
        if not data:
            raise HTTPException(400, "the upload is empty")
        image = await asyncio.to_thread(decode_image, data)
        faces = await svc.worker.analyze_still(image)
        return AnalyzeOut(width=int(image.shape[1]), height=int(image.shape[0]), faces=[
            FaceOut(face_index=f.face_index, box=f.box.as_list(), top_emotion=f.top_emotion,
                    scores={e: round(s, 4) for e, s in zip(EMOTIONS, f.scores, strict=True)},
                    valence=round(f.valence, 4), arousal=round(f.arousal, 4),
                    attention=round(f.attention, 4))
            for f in faces
        ])

    @app.get("/healthz", response_model=Health, tags=["ops"])
    async def healthz(svc: Svc) -> JSONResponse:
        """200 when the database answers; 503, with the reason, when it does not."""
        try:
            await asyncio.to_thread(svc.db.ping)
            database = "ok"
        except ConfbotError as exc:
            database = f"unavailable: {exc}"
        stats = svc.writer.stats
        body = Health(status="ok" if database == "ok" else "degraded", database=database,
                      active_calls=len(svc.manager.active),
                      writer={"pending": stats.pending, "written": stats.written,
                              "dropped": stats.dropped, "retries": stats.retries},
                      detector=svc.worker.detector_name, model=svc.worker.model_name)
        return JSONResponse(body.model_dump(), status_code=200 if database == "ok" else 503)

    @app.get("/metrics", tags=["ops"])
    async def metrics(svc: Svc) -> dict[str, Any]:
        """Counters of the media path: per call pipeline, the inference thread, the writer."""
        return {
            "calls": {call_id: dataclasses.asdict(active.pipeline.stats)
                      for call_id, active in svc.manager.active.items()},
            "inference": dataclasses.asdict(svc.worker.stats),
            "writer": dataclasses.asdict(svc.writer.stats),
            "samples_out": svc.manager.samples_out,
            "memory_release": dataclasses.asdict(svc.memory.stats),
        }

    @app.exception_handler(ImageError)
    async def bad_image(request: Request, exc: ImageError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    # ------------------------------------------------------------------ WHIP, feed, pages

    app.include_router(whip_router(svc.ingest, latest=svc.manager.latest))
    app.include_router(feed_router(svc.db, svc.broker, authorize=svc.manager.authorize_host))
    mount_web(app, svc.db)
    return app


class ImageError(ConfbotError):
    def __init__(self, message: str, status: int = 415) -> None:
        super().__init__(message)
        self.status = status


def decode_image(data: bytes) -> np.ndarray:
    """Decode an uploaded photo; `ImageError` says what is wrong with it."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise ImageError("the upload is not an image this server can read (JPEG, PNG, WebP, BMP, TIFF)")
    if image.shape[0] * image.shape[1] > MAX_IMAGE_PIXELS:
        raise ImageError(f"the photo is {image.shape[1]}x{image.shape[0]} pixels; at most "
                         f"{MAX_IMAGE_PIXELS // 1_000_000} megapixels are accepted", 413)
    return image


def public_url(settings: Settings) -> str:
    if settings.server.public_url:
        return settings.server.public_url.rstrip("/")
    host = settings.server.host
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.server.port}"


def _public_connector(connector: dict[str, Any]) -> dict[str, Any]:
    """The connector settings without the room PIN."""
    return {k: ("***" if k == "pin" and v else v) for k, v in connector.items()}
