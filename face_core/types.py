"""face_core's results: frozen dataclasses, plain numbers only."""

from __future__ import annotations

from dataclasses import dataclass

from face_core.emotions import EMOTIONS


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
        ix = max(0, min(self.x + self.w, other.x + other.w) - max(self.x, other.x))
        iy = max(0, min(self.y + self.h, other.y + other.h) - max(self.y, other.y))
        inter = ix * iy
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

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
