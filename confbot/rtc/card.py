"""What the room sees of the bot: a still card with its name."""

from __future__ import annotations

import asyncio
import time
from fractions import Fraction
from typing import Any

import cv2
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from av import VideoFrame


class BotCardTrack(MediaStreamTrack):
    """A still 320x180 card naming the bot, one frame a second: what the room sees of it."""

    kind = "video"

    def __init__(self, name: str, fps: float = 1.0) -> None:
        super().__init__()
        self._image = _card_image(name)
        self._fps = fps
        self._index = 0
        self._start: float | None = None

    async def recv(self) -> Any:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        delay = self._start + self._index / self._fps - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        frame = VideoFrame.from_ndarray(self._image, format="bgr24")
        frame.pts = round(self._index * 90_000 / self._fps)
        frame.time_base = Fraction(1, 90_000)
        self._index += 1
        return frame


def _card_image(name: str) -> np.ndarray:
    image = np.full((180, 320, 3), (64, 40, 24), dtype=np.uint8)
    lines = [name[i : i + 26] for i in range(0, min(len(name), 78), 26)] or ["confbot"]
    for row, text in enumerate(lines):
        cv2.putText(image, text, (12, 60 + 32 * row), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                    (255, 255, 255), 1, cv2.LINE_AA)
    return image
