"""`confbot bench face`: speed of detection and classification on 640x360 frames with faces."""

from __future__ import annotations

import time
from typing import Any

import cv2
import numpy as np

from face_core import FaceAnalyzer
from face_core.image import to_gray
from face_core.preprocess import crop_face


def synthetic_frames(faces: np.ndarray, n_frames: int, faces_per_frame: int,
                     seed: int = 0) -> list[np.ndarray]:
    """640x360 BGR frames, each with `faces_per_frame` of the given 48x48 faces scaled to
    100-160 px and placed apart on a textured background."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n_frames):
        bg = cv2.GaussianBlur(rng.integers(60, 200, (360, 640), dtype=np.uint8), (0, 0), 8)
        slot_w = 640 // faces_per_frame
        for k in range(faces_per_frame):
            face = faces[rng.integers(len(faces))]
            side = int(rng.integers(100, 161))
            big = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
            x = k * slot_w + int(rng.integers(0, max(1, slot_w - side)))
            y = int(rng.integers(0, 360 - side))
            bg[y:y + side, x:x + side] = big
        frames.append(cv2.cvtColor(bg, cv2.COLOR_GRAY2BGR))
    return frames


def bench_face(analyzer: FaceAnalyzer, frames: list[np.ndarray],
               min_seconds: float = 3.0) -> dict[str, Any]:
    """Per-stage milliseconds per frame, frames per second, and faces found per frame."""
    classifier = analyzer.classifier
    margin = classifier.manifest.crop_margin
    grays = [to_gray(f) for f in frames]
    detections = [analyzer.detect(g) for g in grays]
    crops = [
        np.stack([crop_face(g, d.box, size=classifier.input_size, margin=margin) for d in dets])
        if dets else None
        for g, dets in zip(grays, detections, strict=True)
    ]

    def timed(fn: Any) -> float:
        fn(0)
        t0 = time.perf_counter()
        n = 0
        while time.perf_counter() - t0 < min_seconds or n < len(frames):
            fn(n % len(frames))
            n += 1
        return (time.perf_counter() - t0) / n * 1000

    detect_ms = timed(lambda i: analyzer.detect(to_gray(frames[i])))
    def classify(i: int) -> None:
        batch = crops[i]
        if batch is not None:
            classifier.classify(batch)

    classify_ms = timed(classify)
    stream = analyzer.new_stream()
    total_ms = timed(lambda i: analyzer.analyze_batch([(stream, frames[i])]))
    faces_per_frame = float(np.mean([len(d) for d in detections]))
    return {
        "frame_size": [640, 360],
        "frames": len(frames),
        "faces_per_frame": round(faces_per_frame, 2),
        "detect_ms_per_frame": round(detect_ms, 3),
        "classify_ms_per_frame": round(classify_ms, 3),
        "total_ms_per_frame": round(total_ms, 3),
        "fps": round(1000 / total_ms, 1),
        "detect_fps": round(1000 / detect_ms, 1),
        "classify_ms_per_face": round(classify_ms / max(faces_per_frame, 1e-9), 3),
        "model": classifier.manifest.file,
        "detector": analyzer.detector.name,
        "tta": classifier.tta,
        "tta_margin": classifier.tta_margin,
    }
