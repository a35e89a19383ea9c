"""`FaceAnalyzer`: frames in, per-face emotions out (detect, track, crop, classify, smooth)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from face_core.classify import EmotionClassifier
from face_core.detect import FaceDetector, near_search
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
    # Which of the frames (frames + phase, modulo full_detect_every) get a whole-frame search.
    phase: int = field(default=0)


@dataclass(frozen=True)
class _Pending:
    item: int
    index: int
    det: Detection


# In a stream, a face already tracked is looked for again at about this size (pixels), in a
# window around where it was: well above the Haar cascade's 24-pixel base, far below a
# close-up's size.
NEAR_FACE_PX = 64


class FaceAnalyzer:
    """Runs the vision chain on frames. Synchronous and CPU-bound; not thread-safe.

    `max_side_px` bounds the frame size the detector sees in streams, `still_max_side_px`
    in still images (larger frames are scaled down for detection; crops are taken from the
    full-resolution frame).
    """

    def __init__(self, *, detector: FaceDetector, classifier: EmotionClassifier,
                 smoothing: float = 0.5, max_side_px: int = 640,
                 still_max_side_px: int = 1280, full_detect_every: int = 1) -> None:
        if full_detect_every < 1:
            raise ValueError(f"full_detect_every must be >= 1, got {full_detect_every}")
        self._detector = detector
        self._near = near_search(detector)
        self._classifier = classifier
        self._smoothing = smoothing
        self._max_side_px = max_side_px
        self._still_max_side_px = still_max_side_px
        self._full_detect_every = full_detect_every
        self._streams_made = 0

    @property
    def classifier(self) -> EmotionClassifier:
        return self._classifier

    @property
    def detector(self) -> FaceDetector:
        return self._detector

    def new_stream(self) -> FaceStream:
        """State for one more stream. Streams take turns for their whole-frame searches
        (round-robin phases), so tracks that started together do not all search in the same
        batch: that batch would take `full_detect_every` times as long as the others."""
        phase = self._streams_made % self._full_detect_every
        self._streams_made += 1
        return FaceStream(FaceTracker(), ScoreSmoother(self._smoothing), phase=phase)

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

    def _detect_in_stream(self, stream: FaceStream, gray: np.ndarray) -> list[Detection]:
        """Faces of a stream's frame. Every `full_detect_every`-th frame, and whenever a face
        seen in the previous frame is not found again near where it was, the whole frame is
        searched; in between, only the neighbourhood of each face already tracked, which is
        several times cheaper and is how a face that stays is followed."""
        previous = stream.tracker.seen_boxes
        if previous and (stream.frames + stream.phase) % self._full_detect_every != 0:
            found = [self._detect_near(gray, box) for box in previous]
            if all(d is not None for d in found):
                return [d for d in found if d is not None]
        return self.detect(gray)

    def _detect_near(self, gray: np.ndarray, box: Box) -> Detection | None:
        """The face nearest to `box` in a window twice its size around it, or None."""
        height, width = gray.shape[:2]
        x0, y0 = max(0, box.x - box.w // 2), max(0, box.y - box.h // 2)
        x1, y1 = min(width, box.x + box.w + box.w // 2), min(height, box.y + box.h + box.h // 2)
        if x1 - x0 < 8 or y1 - y0 < 8:
            return None
        window = gray[y0:y1, x0:x1]
        # Scale the window so the face is about NEAR_FACE_PX: the detector then has few
        # scales to try, and never fewer pixels than it needs.
        scale = min(1.0, NEAR_FACE_PX / max(1, min(box.w, box.h)))
        small, scale = downscale(window, max(8, int(max(window.shape[:2]) * scale)))
        found = self._near(small)
        if not found:
            return None
        cx, cy = box.x + box.w / 2, box.y + box.h / 2
        inv = 1.0 / scale

        def placed(d: Detection) -> Detection:
            return Detection(Box(x0 + int(d.box.x * inv), y0 + int(d.box.y * inv),
                                 int(d.box.w * inv), int(d.box.h * inv)), d.score, d.frontal)

        candidates = [placed(d) for d in found]
        best = min(candidates, key=lambda d: (d.box.x + d.box.w / 2 - cx) ** 2
                   + (d.box.y + d.box.h / 2 - cy) ** 2)
        return best

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
            if stream is not None:
                dets = self._detect_in_stream(stream, gray)
            else:
                dets = self.detect(gray, self._still_max_side_px)
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
