"""A raw .y4m video of a real smiling face, for Chromium's fake camera.

Chromium plays `--use-file-for-fake-video-capture=FILE.y4m` in a loop as the camera of every
page that calls getUserMedia. The video shows skimage's astronaut photo (a real photo of a smiling
person, which the shipped model labels happy) cropped to the face, scaled to `FACE_PX` pixels
high, drifting a few pixels on a plain grey background (tests/support/media.py composes the
frames).

    path = astronaut_y4m(cache_dir)     # built once; later calls return the cached file

The file is uncompressed 4:2:0 (640x480 at 10 fps for 10 s is about 46 MB), so it lives in
pytest's cache directory, not in the repository.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from tests.support.media import astronaut_face_bgr, compose_frames

Y4M_VERSION = 1  # bump when the video changes, so cached copies are rebuilt
WIDTH = 640
HEIGHT = 480
FPS = 10
SECONDS = 10.0
FACE_PX = 340  # the crop has a margin: the face itself is about 200 px high


def write_y4m(path: Path, frames: Iterable[np.ndarray], *, width: int, height: int, fps: int) -> Path:
    """Write BGR `frames` (each `height` x `width` x 3, uint8) to `path` as 4:2:0 YUV4MPEG2.

    Raises ValueError naming the frame when one has another shape, and when there is none.
    """
    import cv2

    if width % 2 or height % 2:
        raise ValueError(f"y4m 4:2:0 needs an even width and height, got {width}x{height}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")  # concurrent sessions
    count = 0
    with partial.open("wb") as out:
        # C420jpeg is the chroma siting ffmpeg writes by default; Chromium's y4m reader takes it.
        out.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode("ascii"))
        for index, frame in enumerate(frames):
            if frame.shape != (height, width, 3) or frame.dtype != np.uint8:
                raise ValueError(f"frame {index}: expected uint8 {height}x{width}x3 BGR, "
                                 f"got {frame.dtype} {frame.shape}")
            planes = cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420)  # Y, then U, then V: (h*3/2) x w
            out.write(b"FRAME\n")
            out.write(np.ascontiguousarray(planes).tobytes())
            count += 1
    if count == 0:
        partial.unlink(missing_ok=True)
        raise ValueError(f"{path}: no frames to write")
    partial.replace(path)
    return path


def astronaut_y4m(cache_dir: Path, *, seconds: float = SECONDS, fps: int = FPS) -> Path:
    """The astronaut's smiling face, 640x480, as a .y4m in `cache_dir`; built on the first call."""
    path = Path(cache_dir) / f"astronaut-{WIDTH}x{HEIGHT}-{fps}fps-v{Y4M_VERSION}.y4m"
    if path.is_file() and path.stat().st_size > 0:
        return path
    frames = compose_frames(astronaut_face_bgr(), n_frames=max(1, round(seconds * fps)),
                            width=WIDTH, height=HEIGHT, face_px=FACE_PX)
    return write_y4m(path, frames, width=WIDTH, height=HEIGHT, fps=fps)
