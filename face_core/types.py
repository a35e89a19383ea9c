"""face_core's results: frozen dataclasses, plain numbers only."""

from __future__ import annotations

from dataclasses import dataclass

from face_core.emotions import EMOTIONS


def iou_xywh(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Intersection over union of two axis-aligned boxes given as (x, y, w, h)."""
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in pixels of the frame it was found in."""

    x: int
    y: int
    w: int
    h: int

    @property
    def area(self) -> int:
        return self.w * self.h

    def iou(self, other: Box) -> float:
        return iou_xywh((self.x, self.y, self.w, self.h), (other.x, other.y, other.w, other.h))

    def as_list(self) -> list[int]:
        return [self.x, self.y, self.w, self.h]


@dataclass(frozen=True)
class Detection:
    """A face found by a detector. `frontal` is the detector's word on the pose, if it has one."""

    box: Box
    score: float = 1.0
    frontal: bool = True


@dataclass(frozen=True)
class FaceResult:
    """One face in one frame: where it is, its stable index, and what it shows.

    `scores` are the (smoothed) probabilities of the 7 emotions in `EMOTIONS` order.
    `valence` and `arousal` lie in [-1, 1]; `attention` in [0, 1] (see face_core.signals).
    """

    face_index: int
    box: Box
    scores: tuple[float, ...]
    valence: float
    arousal: float
    attention: float

    @property
    def top_emotion(self) -> str:
        return EMOTIONS[max(range(len(self.scores)), key=self.scores.__getitem__)]

    def scores_by_name(self) -> dict[str, float]:
        return dict(zip(EMOTIONS, self.scores, strict=True))
