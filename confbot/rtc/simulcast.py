"""Pick the lowest simulcast layer that still gives enough pixels per face.

A simulcast publisher sends the same video at up to three sizes (substreams 0, 1, 2, smallest
first); an SFU such as Janus forwards one of them to each subscriber, the largest by default.
Face analysis needs a frame tall enough for faces to keep their detail (`min_height_px`,
360 px by default) and gains nothing from more: the smaller layer costs less to decode.

Janus does not say how tall each layer is, so `SimulcastLayerPicker` measures: starting from the
layer Janus sends, it asks for the next smaller one while the current one is taller than needed;
when the smaller one turns out too short, it goes back up one and stays. A requested switch that
shows no new frame size within `switch_timeout_s` (no such layer, or the same size) also ends the
walk on the last good layer. When only layers shorter than `min_height_px` exist, it keeps the
tallest, which is the one Janus starts with. `SimulcastTrack` wraps a received track, feeds the
picker the height of each frame it passes through, and calls a `switch(substream)` callback.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from aiortc import MediaStreamTrack
from av import VideoFrame


class SimulcastLayerPicker:
    """Decides which substream to ask for, from the heights of the frames that arrive."""

    def __init__(
        self,
        *,
        min_height_px: int = 360,
        start_substream: int = 2,
        switch_timeout_s: float = 4.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.min_height_px = min_height_px
        self.substream = start_substream  # the layer whose frames we are getting
        self.height_px: int | None = None  # the height of those frames
        self.done = False
        self._switch_timeout_s = switch_timeout_s
        self._clock = clock
        self._pending: int | None = None  # requested, not yet seen
        self._pending_since = 0.0

    def observe(self, height_px: int) -> int | None:
        """Note one frame's height; return a substream to switch to, or None to stay."""
        if self.done:
            return None
        if self._pending is None:
            if self.height_px is None or height_px != self.height_px:
                self.height_px = height_px
            return self._step_down()
        if height_px != self.height_px:  # the requested layer arrived
            if height_px >= self.min_height_px:
                self.substream, self.height_px, self._pending = self._pending, height_px, None
                return self._step_down()
            # Too short: back to the last good layer, and stay there.
            self._pending = None
            self.done = True
            return self.substream
        if self._clock() - self._pending_since > self._switch_timeout_s:
            # No new size: that layer does not exist or is no smaller. Stay where we are.
            self._pending = None
            self.done = True
            return self.substream
        return None

    def _step_down(self) -> int | None:
        assert self.height_px is not None
        if self.substream > 0 and self.height_px > self.min_height_px:
            self._pending = self.substream - 1
            self._pending_since = self._clock()
            return self._pending
        self.done = True
        return None


class SimulcastTrack(MediaStreamTrack):
    """Passes frames through and asks for a smaller simulcast layer while they are tall enough."""

    kind = "video"

    def __init__(self, inner: MediaStreamTrack, switch: Callable[[int], None], *,
                 min_height_px: int) -> None:
        super().__init__()
        self._inner = inner
        self._switch = switch
        self.picker = SimulcastLayerPicker(min_height_px=min_height_px)

    async def recv(self) -> Any:
        frame = await self._inner.recv()
        if not self.picker.done and isinstance(frame, VideoFrame):
            substream = self.picker.observe(frame.height)
            if substream is not None:
                self._switch(substream)
        return frame

    def stop(self) -> None:
        super().stop()
        self._inner.stop()
