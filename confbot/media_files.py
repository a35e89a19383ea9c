"""Reading images and videos from disk, and drawing the labelled boxes (`--annotate`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from confbot.errors import InputError
from face_core import FaceResult

MAX_IMAGE_PIXELS = 120_000_000  # 10000x10000 fits; anything beyond is refused, not decoded


def read_image(path: Path) -> np.ndarray | None:
    """The image at `path` as decoded by OpenCV (any depth and channels), or None if the
    file is not an image OpenCV can read."""
    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0:
        raise InputError(f"{path}: file is empty")
    try:
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise InputError(f"{path}: image cannot be decoded ({exc.err})") from exc
    if image is not None and image.shape[0] * image.shape[1] > MAX_IMAGE_PIXELS:
        raise InputError(f"{path}: image of {image.shape[1]}x{image.shape[0]} is too large")
    return image


@dataclass(frozen=True)
class VideoFrame:
    index: int
    time_s: float
    bgr: np.ndarray


class VideoReader:
    """Decoded frames of a video file via PyAV; a truncated file ends early with `truncated`."""

    def __init__(self, path: Path) -> None:
        import av

        self.path = path
        try:
            self._container = av.open(str(path))
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise InputError(f"{path}: not an image or a video file") from exc
        if not self._container.streams.video:
            self._container.close()
            raise InputError(f"{path}: has no video stream")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"
        rate = self._stream.average_rate or Fraction(25)
        self.fps = float(rate)
        duration = (float(self._stream.duration * self._stream.time_base)
                    if self._stream.duration and self._stream.time_base else
                    (self._container.duration or 0) / 1_000_000)
        self.duration_s = max(0.0, duration)
        self.width = self._stream.codec_context.width
        self.height = self._stream.codec_context.height
        self.truncated = False

    def frames(self) -> Iterator[VideoFrame]:
        import av

        index = 0
        t = 0.0
        try:
            for frame in self._container.decode(self._stream):
                t = float(frame.time) if frame.time is not None else index / self.fps
                yield VideoFrame(index, t, frame.to_ndarray(format="bgr24"))
                index += 1
        except (av.FFmpegError, EOFError) as exc:
            self.truncated = True
            if index == 0:
                raise InputError(f"{self.path}: video cannot be decoded ({exc})") from exc
        if index == 0:
            raise InputError(f"{self.path}: no decodable video frames (truncated or corrupt)")
        # Some containers just end where the file was cut: compare with the stated length.
        if self.duration_s and t + 2 / self.fps < self.duration_s:
            self.truncated = True

    def close(self) -> None:
        self._container.close()


_COLOURS = {
    "angry": (40, 40, 220), "disgust": (40, 140, 40), "fear": (160, 60, 160),
    "happy": (40, 200, 240), "sad": (200, 120, 40), "surprise": (240, 160, 240),
    "neutral": (200, 200, 200),
}


def draw_faces(bgr: np.ndarray, faces: list[FaceResult]) -> np.ndarray:
    """A copy of `bgr` with a box and an emotion label on each face, as FACE's client drew."""
    out = bgr.copy()
    scale = max(0.4, min(out.shape[:2]) / 720)
    for face in faces:
        b = face.box
        colour = _COLOURS[face.top_emotion]
        thickness = max(1, round(2 * scale))
        cv2.rectangle(out, (b.x, b.y), (b.x + b.w, b.y + b.h), colour, thickness)
        label = f"#{face.face_index} {face.top_emotion} {max(face.scores):.0%}"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, thickness)
        y = max(th + base, b.y)
        cv2.rectangle(out, (b.x, y - th - base), (b.x + tw, y), colour, -1)
        cv2.putText(out, label, (b.x, y - base), cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale,
                    (0, 0, 0), thickness, cv2.LINE_AA)
    return out


class VideoWriter:
    """Writes annotated frames as MP4 (MPEG-4 Part 2, which OpenCV's wheels can encode)."""

    def __init__(self, path: Path, fps: float, width: int, height: int) -> None:
        fourcc = cv2.VideoWriter.fourcc(*"mp4v")
        self._writer = cv2.VideoWriter(str(path), fourcc, fps, (width, height))
        if not self._writer.isOpened():
            raise InputError(f"{path}: cannot write a video there (use a .mp4 name)")

    def write(self, bgr: np.ndarray) -> None:
        self._writer.write(bgr)

    def close(self) -> None:
        self._writer.release()
