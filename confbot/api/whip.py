"""HTTP side of the WHIP ingest (RFC 9725): offer, leave, and the publisher's own latest result."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from confbot.errors import InputError
from confbot.rtc.whip import CallFullError, CallNotOpenError, WhipIngest

MAX_OFFER_BYTES = 64 * 1024
SDP = "application/sdp"
ID = Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")


def _error(status: int, text: str, **headers: str) -> PlainTextResponse:
    return PlainTextResponse(text + "\n", status_code=status, headers=headers)


def whip_router(ingest: WhipIngest, *, latest: Callable[[str, str], dict[str, Any] | None]) -> APIRouter:
    """Routes under /whip. `latest(call_id, participant_id)` gives a publisher's newest faces."""
    router = APIRouter(tags=["whip"])

    @router.options("/whip/{call_id}")
    async def options(call_id: Annotated[str, ID]) -> Response:
        return Response(status_code=204, headers={"Accept-Post": SDP, "Allow": "OPTIONS, POST"})

    @router.post("/whip/{call_id}", status_code=201, response_class=PlainTextResponse,
                 responses={201: {"content": {SDP: {}}, "description": "the SDP answer"},
                            400: {"description": "malformed SDP, or no video"},
                            404: {"description": "no such call, or it has ended"},
                            415: {"description": "not application/sdp"}})
    async def publish(
        request: Request, call_id: Annotated[str, ID],
        name: Annotated[str | None, Query(max_length=200)] = None,
        consent: Annotated[str | None, Query(pattern="^(yes|no)$")] = None,
    ) -> Response:
        """Publish into the call: the body is an SDP offer with a video track."""
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != SDP:
            return _error(415, f"expected Content-Type: {SDP}, got {content_type or 'none'}",
                          **{"Accept-Post": SDP})
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_OFFER_BYTES:
                return _error(413, f"the offer is larger than {MAX_OFFER_BYTES // 1024} KiB")
        try:
            offer = body.decode("utf-8")
        except UnicodeDecodeError:
            return _error(400, "malformed SDP offer: not UTF-8 text")
        try:
            session = await ingest.publish(call_id, offer, display_name=name, consent=consent == "yes")
        except CallNotOpenError as exc:
            return _error(404, str(exc))
        except CallFullError as exc:
            return _error(503, str(exc), **{"Retry-After": "30"})
        except InputError as exc:
            return _error(400, str(exc))
        resource = f"/whip/{call_id}/{session.resource_id}"
        return Response(session.answer_sdp, status_code=201, media_type=SDP, headers={
            "Location": resource, "X-Confbot-Participant": session.participant_id,
            "X-Confbot-Latest": f"{resource}/latest", "Cache-Control": "no-store"})

    @router.delete("/whip/{call_id}/{resource_id}")
    async def leave(call_id: Annotated[str, ID], resource_id: Annotated[str, ID]) -> Response:
        """The publisher leaves the call."""
        if not await ingest.delete(call_id, resource_id):
            return _error(404, "no such WHIP resource (it may have left already)")
        return Response(status_code=200)

    @router.patch("/whip/{call_id}/{resource_id}")
    async def trickle(call_id: Annotated[str, ID], resource_id: Annotated[str, ID]) -> Response:
        return _error(405, "trickle ICE is not supported: put every candidate in the offer",
                      Allow="DELETE")

    @router.get("/whip/{call_id}/{resource_id}/latest")
    async def own_latest(call_id: Annotated[str, ID], resource_id: Annotated[str, ID]) -> Response:
        """The publisher's own newest faces and emotions; 204 before the first."""
        participant_id = ingest.participant_of(call_id, resource_id)
        if participant_id is None:
            return _error(404, "no such WHIP resource (it may have left)")
        found = latest(call_id, participant_id)
        if found is None:
            return Response(status_code=204, headers={"Cache-Control": "no-store"})
        return JSONResponse(found, headers={"Cache-Control": "no-store"})

    return router
