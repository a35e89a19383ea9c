"""Synthetic face video for benchmarks and tests: real face crops on a plain background,
encoded once to VP8 so that publishers can replay the packets without re-encoding them."""

from __future__ import annotations

import os
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

WIDTH = 640
HEIGHT = 360
FPS = 15
BACKGROUND = 128  # plain mid grey


def compose_frames(faces_bgr: Sequence[np.ndarray], *, n_frames: int, width: int = WIDTH,
                   height: int = HEIGHT, face_px: int = 200, seed: int = 0) -> list[np.ndarray]:
    """`n_frames` BGR frames with the faces side by side, each `face_px` high, drifting a few
    pixels (a smooth random walk) on a grey background."""
    import cv2

    if not faces_bgr:
        raise ValueError("compose_frames needs at least one face")
    slot_w = width // len(faces_bgr)
    scaled = []
    for face in faces_bgr:
        if face.ndim != 3 or face.shape[2] != 3:
            raise ValueError(f"faces must be HxWx3 BGR, got shape {face.shape}")
        scale = min(face_px / face.shape[0], (slot_w - 20) / face.shape[1])
        size = (max(1, round(face.shape[1] * scale)), max(1, round(face.shape[0] * scale)))
        scaled.append(cv2.resize(face, size, interpolation=cv2.INTER_CUBIC))
    rng = np.random.default_rng(seed)
    offsets = np.zeros((len(scaled), 2))
    frames = []
    for _ in range(n_frames):
        offsets = np.clip(offsets * 0.8 + rng.normal(0.0, 2.0, size=offsets.shape), -8, 8)
        frame = np.full((height, width, 3), BACKGROUND, dtype=np.uint8)
        for i, face in enumerate(scaled):
            h, w = face.shape[:2]
            x = i * slot_w + (slot_w - w) // 2 + round(offsets[i, 0])
            y = (height - h) // 2 + round(offsets[i, 1])
            x, y = min(max(0, x), width - w), min(max(0, y), height - h)
            frame[y:y + h, x:x + w] = face
        frames.append(frame)
    return frames


def encode_vp8(path: Path, frames: Sequence[np.ndarray], *, fps: int = FPS, bitrate: int = 800_000,
               keyframe_interval: int = FPS) -> Path:
    """Encode BGR frames to a VP8 IVF file at `path` (written atomically) and return `path`."""
    import av

    if not frames:
        raise ValueError("encode_vp8 needs at least one frame")
    height, width = frames[0].shape[:2]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    with av.open(str(partial), mode="w", format="ivf") as container:
        stream = container.add_stream("libvpx", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.bit_rate = bitrate
        stream.codec_context.gop_size = keyframe_interval
        stream.codec_context.time_base = Fraction(1, fps)
        # "realtime" encodes ten times faster than the default on a busy 2-core machine.
        stream.codec_context.options = {"deadline": "realtime", "cpu-used": "4"}
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")
            frame.pts = index
            frame.time_base = Fraction(1, fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    partial.replace(path)
    return path


def fer2013_faces_bgr(npz: Path, labels: Sequence[int], *, seed: int = 0) -> list[np.ndarray]:
    """One FER2013 face (48x48 grey, as BGR) for each label, drawn from `npz` (arrays x, y)."""
    with np.load(npz) as data:
        x, y = data["x"], data["y"]
    rng = np.random.default_rng(seed)
    faces = []
    for label in labels:
        candidates = np.flatnonzero(y == label)
        if candidates.size == 0:
            raise ValueError(f"{npz}: no face with label {label}")
        face = x[int(rng.choice(candidates))].reshape(48, 48).astype(np.uint8)
        faces.append(np.repeat(face[:, :, None], 3, axis=2))
    return faces
