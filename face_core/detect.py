"""Face detectors behind one small interface.

`HaarFaceDetector` needs only OpenCV 4.x, whose wheels ship the cascades, so it works
offline out of the box. `YuNetFaceDetector` is more accurate and gives landmarks (used for
the attention signal), but needs its ONNX model file, which no wheel ships.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from face_core.errors import ArtifactError
from face_core.types import Box, Detection


class FaceDetector(Protocol):
    name: str  # the detector's kind, as `detector.kind` names it

    def detect(self, gray: np.ndarray) -> list[Detection]:
        """Faces in an 8-bit grayscale frame, boxes in that frame's pixels."""
        ...

    # Optionally, `detect_near(gray) -> list[Detection]`: the same, in a window cut around a
    # tracked face that fills about half of it, where a detector may skip its search for
    # small faces (the whole-frame searches find new faces). The analyzer uses `detect`
    # for detectors without it (see `near_search`).


def near_search(detector: FaceDetector) -> Callable[[np.ndarray], list[Detection]]:
    """The detector's search for a window around a tracked face: its `detect_near` if it has
    one, else `detect`."""
    return getattr(detector, "detect_near", detector.detect)


def default_haar_cascade() -> Path:
    """The frontal-face cascade that opencv-python 4.x wheels ship."""
    data = getattr(cv2, "data", None)
    path = Path(getattr(data, "haarcascades", "")) / "haarcascade_frontalface_default.xml"
    if not path.is_file():
        raise ArtifactError(
            f"OpenCV {cv2.__version__} ships no Haar cascades (OpenCV 5 dropped them); "
            "install opencv-python-headless<5 or use the yunet detector"
        )
    return path


class HaarFaceDetector:
    """Viola-Jones frontal faces. `min_face_px` is in the pixels of the frame it is given."""

    name = "haar"

    def __init__(self, cascade_path: Path | None = None, *, min_face_px: int = 40,
                 scale_factor: float = 1.1, min_neighbors: int = 5) -> None:
        path = cascade_path or default_haar_cascade()
        self._cascade = cv2.CascadeClassifier(str(path))
        if self._cascade.empty():
            raise ArtifactError(f"{path}: not a readable Haar cascade")
        self._min = (min_face_px, min_face_px)
        self._scale_factor = scale_factor
        self._min_neighbors = min_neighbors

    def detect(self, gray: np.ndarray) -> list[Detection]:
        found = self._cascade.detectMultiScale3(
            gray, scaleFactor=self._scale_factor, minNeighbors=self._min_neighbors,
            minSize=self._min, outputRejectLevels=True,
        )
        rects, _levels, weights = found
        out = []
        for (x, y, w, h), weight in zip(rects, np.ravel(weights), strict=False):
            score = float(1.0 / (1.0 + np.exp(-float(weight))))  # squash stage weight to (0, 1)
            out.append(Detection(Box(int(x), int(y), int(w), int(h)), score=score))
        return out


class YuNetFaceDetector:
    """OpenCV's YuNet CNN (`cv2.FaceDetectorYN`); `model_path` is its ONNX file."""

    name = "yunet"

    def __init__(self, model_path: Path, *, score_threshold: float = 0.7,
                 min_face_px: int = 24) -> None:
        if not Path(model_path).is_file():
            raise ArtifactError(f"{model_path}: YuNet model file not found")
        try:
            self._net = cv2.FaceDetectorYN.create(str(model_path), "", (320, 320),
                                                  score_threshold=score_threshold)
        except cv2.error as exc:
            raise ArtifactError(f"{model_path}: cannot load YuNet model ({exc})") from exc
        self._min_face_px = min_face_px

    def detect(self, gray: np.ndarray) -> list[Detection]:
        bgr = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
        h, w = gray.shape[:2]
        self._net.setInputSize((w, h))
        _, faces = self._net.detect(bgr)
        out: list[Detection] = []
        for row in faces if faces is not None else []:
            x, y, bw, bh = (round(v) for v in row[:4])
            if min(bw, bh) < self._min_face_px:
                continue
            # Landmarks: right eye, left eye, nose tip, mouth corners (x, y pairs).
            reye, leye, nose = row[4:6], row[6:8], row[8:10]
            eye_dist = float(np.hypot(*(leye - reye))) or 1.0
            yaw = abs(float(nose[0] - (reye[0] + leye[0]) / 2)) / eye_dist
            out.append(Detection(Box(x, y, bw, bh), score=float(row[-1]), frontal=yaw < 0.35))
        return out
