"""The test publisher's WHIP mode, against a minimal WHIP endpoint (aiortc behind Starlette).

This checks the helper the built-in-room tests reuse: POST of the offer as application/sdp with
a Bearer token, 201 with the answer and a Location, media flowing, DELETE of the Location on
SIGTERM.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import uvicorn
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support.janus import free_tcp_port
from tests.support.publisher import PublisherProcess

TOKEN = "whip-test-token"


class WhipEndpoint:
    def __init__(self) -> None:
        self.pcs: dict[str, RTCPeerConnection] = {}
        self.tracks: asyncio.Queue[MediaStreamTrack] = asyncio.Queue()
        self.deleted: list[str] = []
        self.app = Starlette(routes=[
            Route("/whip", self.post, methods=["POST"]),
            Route("/whip/{resource}", self.delete, methods=["DELETE"]),
        ])

    async def post(self, request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return Response(status_code=401)
        if request.headers.get("content-type") != "application/sdp":
            return Response(status_code=415)
        pc = RTCPeerConnection()
        pc.on("track", lambda track: self.tracks.put_nowait(track))
        await pc.setRemoteDescription(RTCSessionDescription((await request.body()).decode(), "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        resource = f"r{len(self.pcs)}"
        self.pcs[resource] = pc
        return Response(pc.localDescription.sdp, status_code=201, media_type="application/sdp",
                        headers={"Location": f"/whip/{resource}"})

    async def delete(self, request: Request) -> Response:
        resource = request.path_params["resource"]
        pc = self.pcs.pop(resource, None)
        if pc is None:
            return Response(status_code=404)
        self.deleted.append(resource)
        await pc.close()
        return Response(status_code=200)


@pytest.mark.timeout(60)
async def test_publisher_whip_posts_sends_video_and_deletes_on_sigterm(
    pinned_ice: str, astronaut_video: Path
) -> None:
    endpoint = WhipEndpoint()
    port = free_tcp_port()
    server = uvicorn.Server(uvicorn.Config(endpoint.app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.05)
        url = f"http://127.0.0.1:{port}/whip"
        publisher = await asyncio.to_thread(
            PublisherProcess.whip, url, astronaut_video, bearer=TOKEN, ice_address=pinned_ice
        )
        try:
            assert publisher.ready_id == f"{url}/r0"
            track = await asyncio.wait_for(endpoint.tracks.get(), 10)
            frame = await asyncio.wait_for(track.recv(), 15)
            assert frame.to_ndarray(format="bgr24").shape == (360, 640, 3)  # type: ignore[union-attr]
        finally:
            assert await asyncio.to_thread(publisher.terminate) == 0
        assert endpoint.deleted == ["r0"]
    finally:
        for pc in endpoint.pcs.values():
            await pc.close()
        server.should_exit = True
        await serving
