"""`FaceAnalyzer`: frames in, per-face emotions out (detect, track, crop, classify, smooth)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from face_core.classify import EmotionClassifier
from face_core.detect import FaceDetector
from face_core.emotions import valence_arousal
from face_core.image import downscale, to_bgr8, to_gray
from face_core.preprocess import crop_face
from face_core.signals import attention
from face_core.smooth import ScoreSmoother
from face_core.track import FaceTracker
from face_core.types import Box, Detection, FaceResult


@dataclass
class FaceStream:
    """Per-stream state: which face is which, and each face's smoothed scores."""

    tracker: FaceTracker
    smoother: ScoreSmoother
    frames: int = field(default=0)


@dataclass(frozen=True)
class _Pending:
    item: int
    index: int
    det: Detection


class FaceAnalyzer:
    """Runs the vision chain on frames. Synchronous and CPU-bound; not thread-safe.

    `max_side_px` bounds the frame size the detector sees in streams, `still_max_side_px`
    in still images (larger frames are scaled down for detection; crops are taken from the
    full-resolution frame).
    """

    def __init__(self, *, detector: FaceDetector, classifier: EmotionClassifier,
                 smoothing: float = 0.5, max_side_px: int = 640,
                 still_max_side_px: int = 1280) -> None:
        self._detector = detector
        self._classifier = classifier
        self._smoothing = smoothing
        self._max_side_px = max_side_px
        self._still_max_side_px = still_max_side_px

    @property
    def classifier(self) -> EmotionClassifier:
        return self._classifier

    def new_stream(self) -> FaceStream:
        return FaceStream(FaceTracker(), ScoreSmoother(self._smoothing))

    def detect(self, gray: np.ndarray, max_side_px: int | None = None) -> list[Detection]:
        small, scale = downscale(gray, max_side_px or self._max_side_px)
        found = self._detector.detect(small)
        if scale == 1.0:
            return found
        inv = 1.0 / scale
        return [
            Detection(Box(int(d.box.x * inv), int(d.box.y * inv), int(d.box.w * inv),
                          int(d.box.h * inv)), d.score, d.frontal)
            for d in found
        ]

    def analyze_batch(
        self, items: Sequence[tuple[FaceStream | None, np.ndarray]]
    ) -> list[list[FaceResult]]:
        """Analyze one frame from each of several streams; all faces are classified together.

        A `None` stream analyzes its frame as a still image: indices by position, no
        smoothing. Returns, per item, its faces ordered by face index.
        """
        size = self._classifier.input_size
        margin = self._classifier.manifest.crop_margin
        pending: list[_Pending] = []
        crops: list[np.ndarray] = []
        for i, (stream, frame) in enumerate(items):
            gray = to_gray(to_bgr8(frame))
            # A still photo gets a finer look than a video frame sampled in a call.
            dets = self.detect(gray, None if stream is not None else self._still_max_side_px)
            if stream is not None:
                indices = stream.tracker.update([d.box for d in dets])
                stream.frames += 1
            else:
                dets = sorted(dets, key=lambda d: (d.box.x, d.box.y))
                indices = list(range(len(dets)))
            for det, index in zip(dets, indices, strict=True):
                pending.append(_Pending(i, index, det))
                crops.append(crop_face(gray, det.box, size=size, margin=margin))
        probs = (self._classifier.classify(np.stack(crops)) if crops
                 else np.zeros((0, 7), np.float32))
        results: list[list[FaceResult]] = [[] for _ in items]
        for p, crop, row in zip(pending, crops, probs, strict=True):
            stream = items[p.item][0]
            scores = stream.smoother.update(p.index, row) if stream is not None else row
            va = valence_arousal(scores)[0]
            results[p.item].append(FaceResult(
                face_index=p.index, box=p.det.box,
                scores=tuple(float(s) for s in scores),
                valence=float(va[0]), arousal=float(va[1]),
                attention=attention(crop, detector_frontal=p.det.frontal),
            ))
        for (stream, _), faces in zip(items, results, strict=True):
            faces.sort(key=lambda f: f.face_index)
            if stream is not None:
                stream.smoother.retain(stream.tracker.live_indices)
        return results

    def analyze_image(self, image: np.ndarray) -> list[FaceResult]:
        """Faces of a still image, indexed left to right."""
        return self.analyze_batch([(None, image)])[0]
