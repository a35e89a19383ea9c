"""`EmotionSample`: one face of one participant at one moment, the unit that is stored and fed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from face_core.emotions import EMOTIONS
from face_core.types import FaceResult


@dataclass(frozen=True, kw_only=True)
class EmotionSample:
    call_id: str
    participant_id: str
    face_index: int
    t_ms: int  # since the call started
    wall_time_ms: int  # Unix epoch milliseconds, when the frame was taken
    scores: tuple[float, ...]  # 7 probabilities, EMOTIONS order
    valence: float
    arousal: float
    attention: float
    box: tuple[int, int, int, int]  # x, y, w, h in the frame's pixels
    frame_received_monotonic: float = 0.0  # for latency metrics; never stored

    @property
    def top_emotion(self) -> str:
        return EMOTIONS[max(range(len(self.scores)), key=self.scores.__getitem__)]

    @classmethod
    def from_face(
        cls, face: FaceResult, *, call_id: str, participant_id: str, t_ms: int,
        wall_time_ms: int, frame_received_monotonic: float = 0.0,
    ) -> EmotionSample:
        return cls(
            call_id=call_id, participant_id=participant_id, face_index=face.face_index,
            t_ms=t_ms, wall_time_ms=wall_time_ms, scores=face.scores, valence=face.valence,
            arousal=face.arousal, attention=face.attention, box=tuple(face.box.as_list()),  # type: ignore[arg-type]
            frame_received_monotonic=frame_received_monotonic,
        )

    def to_message(self) -> dict[str, Any]:
        """The feed's `sample` message (docs/feed.md)."""
        return {
            "type": "sample",
            "call_id": self.call_id,
            "participant_id": self.participant_id,
            "face_index": self.face_index,
            "t_ms": self.t_ms,
            "wall_time_ms": self.wall_time_ms,
            "top_emotion": self.top_emotion,
            "scores": dict(zip(EMOTIONS, (round(s, 4) for s in self.scores), strict=True)),
            "valence": round(self.valence, 4),
            "arousal": round(self.arousal, 4),
            "attention": round(self.attention, 4),
            "box": list(self.box),
        }
