"""`TrackReader`: drains one video track and keeps only its newest frame.

    track --recv()--> TrackReader --take_latest()--> sampler

Frames are never queued: each new frame replaces the one before it, so a reader holds at most
one frame however fast the track produces them and however slowly the sampler takes them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

log = logging.getLogger(__name__)

DEFAULT_MAX_FRAME_PIXELS = 3840 * 2160
# recv() failures in a row (other than the track's end) after which the track is given up on.
MAX_CONSECUTIVE_RECV_ERRORS = 50


@dataclass(frozen=True)
class LatestFrame:
    """A frame as received: `frame` is an `av.VideoFrame` (or a BGR ndarray), untouched.

    `received_monotonic` is the reader's clock when it arrived, `wall_time_ms` the Unix time
    in milliseconds; `width` and `height` are the frame's own pixel size.
    """

    frame: Any
    received_monotonic: float
    wall_time_ms: int
    width: int
    height: int


class TrackReader:
    """Reads one video track until it ends, keeping only the newest frame not yet taken.

    `run()` returns when the track ends and never raises for a bad frame: a frame larger
    than `max_frame_pixels`, or one that is not a video frame, is counted in
    `frames_refused` (and logged once per track at WARNING) and not kept. While
    `keep_frames` is False frames are still received (so the sender is not stalled) and
    counted, but none is kept.
    """

    def __init__(self, track: MediaStreamTrack, *, call_id: str, participant_id: str,
                 max_frame_pixels: int = DEFAULT_MAX_FRAME_PIXELS,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time,
                 keep_frames: bool = True) -> None:
        if max_frame_pixels <= 0:
            raise ValueError(f"max_frame_pixels must be positive, got {max_frame_pixels}")
        self.track = track
        self.call_id = call_id
        self.participant_id = participant_id
        self._max_frame_pixels = max_frame_pixels
        self._clock = clock
        self._wall_clock = wall_clock
        self._keep_frames = keep_frames
        self._latest: LatestFrame | None = None
        self._warned: set[str] = set()
        self.frames_received = 0  # every frame recv() gave, refused ones included
        self.frames_refused = 0  # too large, or not a video frame
        self.frames_dropped = 0  # replaced by a newer frame before anyone took them
        self.frames_taken = 0
        self.recv_errors = 0
        self.ended = False

    @property
    def keep_frames(self) -> bool:
        return self._keep_frames

    @keep_frames.setter
    def keep_frames(self, keep: bool) -> None:
        """Turning this off also forgets the frame held now."""
        self._keep_frames = keep
        if not keep:
            self._latest = None

    def _ids(self) -> str:
        return f"call {self.call_id} participant {self.participant_id} track {self.track.id}"

    async def run(self) -> None:
        """Receive frames until the track ends (or this task is cancelled)."""
        consecutive_errors = 0
        try:
            while True:
                try:
                    frame = await self.track.recv()
                except MediaStreamError:
                    break
                except Exception as exc:
                    # Not the track's end, but something broke in it; give it a few chances.
                    self.recv_errors += 1
                    consecutive_errors += 1
                    if consecutive_errors >= MAX_CONSECUTIVE_RECV_ERRORS:
                        log.error("%s: giving up after %d failed reads in a row (last: %r)",
                                  self._ids(), consecutive_errors, exc)
                        break
                    if self.recv_errors == 1:
                        log.warning("%s: reading a frame failed; skipping it", self._ids(), exc_info=exc)
                    else:
                        log.debug("%s: reading a frame failed: %r", self._ids(), exc)
                    await asyncio.sleep(0)  # never spin without letting the loop run
                    continue
                consecutive_errors = 0
                self._receive(frame)
        finally:
            self.ended = True
        log.info("%s: ended after %d frames (%d refused, %d dropped as stale)", self._ids(),
                 self.frames_received, self.frames_refused, self.frames_dropped)

    def _receive(self, frame: Any) -> None:
        self.frames_received += 1
        size = _frame_size(frame)
        if size is None:
            self.frames_refused += 1
            self._warn_once("not-video", "%s: refusing a %s, which is not a video frame",
                            self._ids(), type(frame).__name__)
            return
        width, height = size
        if width <= 0 or height <= 0:
            self.frames_refused += 1
            self._warn_once("empty", "%s: refusing an empty %dx%d frame", self._ids(), width, height)
            return
        if width * height > self._max_frame_pixels:
            self.frames_refused += 1
            self._warn_once("too-large", "%s: refusing %dx%d frames (more than %d pixels)",
                            self._ids(), width, height, self._max_frame_pixels)
            return
        if not self._keep_frames:
            return
        if self._latest is not None:
            self.frames_dropped += 1
        self._latest = LatestFrame(frame=frame, received_monotonic=self._clock(),
                                   wall_time_ms=int(self._wall_clock() * 1000),
                                   width=width, height=height)

    def _warn_once(self, reason: str, msg: str, *args: Any) -> None:
        if reason in self._warned:
            log.debug(msg, *args)
        else:
            self._warned.add(reason)
            log.warning(msg + " (said once per track)", *args)

    def take_latest(self) -> LatestFrame | None:
        """The newest frame not yet taken, or None; a frame is handed out only once."""
        latest, self._latest = self._latest, None
        if latest is not None:
            self.frames_taken += 1
        return latest


def _frame_size(frame: Any) -> tuple[int, int] | None:
    """(width, height) of a video frame, or None if `frame` is not one."""
    if isinstance(frame, av.VideoFrame):
        return int(frame.width), int(frame.height)
    if isinstance(frame, np.ndarray) and frame.ndim in (2, 3):
        return int(frame.shape[1]), int(frame.shape[0])
    return None
