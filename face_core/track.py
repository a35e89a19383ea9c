"""Stable face indices across the frames of one stream."""

from __future__ import annotations

from dataclasses import dataclass

from face_core.types import Box


@dataclass
class _Track:
    index: int
    box: Box
    missed: int = 0


class FaceTracker:
    """Greedy box matching between consecutive frames of one video track.

    A detection takes the index of the nearest live track (by IoU, or by centre distance
    when the face moved further than its own size allows IoU to see, as happens at a
    2 fps sample rate). Unmatched detections open new indices, which are never reused;
    a track that goes unseen for more than `max_missed` frames is closed.
    """

    def __init__(self, *, max_missed: int = 4, min_iou: float = 0.2,
                 max_center_shift: float = 1.0) -> None:
        self._tracks: list[_Track] = []
        self._next_index = 0
        self._max_missed = max_missed
        self._min_iou = min_iou
        self._max_center_shift = max_center_shift

    @property
    def seen_boxes(self) -> list[Box]:
        """Boxes of the faces found in the latest frame."""
        return [t.box for t in self._tracks if t.missed == 0]

    @property
    def live_indices(self) -> set[int]:
        return {t.index for t in self._tracks}

    def _affinity(self, track: Box, det: Box) -> float:
        iou = track.iou(det)
        if iou >= self._min_iou:
            return 1.0 + iou
        tcx, tcy = track.x + track.w / 2, track.y + track.h / 2
        dcx, dcy = det.x + det.w / 2, det.y + det.h / 2
        size = max(track.w, track.h, 1)
        shift = ((tcx - dcx) ** 2 + (tcy - dcy) ** 2) ** 0.5 / size
        ratio = max(track.area, det.area) / max(1, min(track.area, det.area))
        if shift <= self._max_center_shift and ratio < 2.5:
            return 1.0 - shift
        return 0.0

    def update(self, boxes: list[Box]) -> list[int]:
        """Assign an index to each box of the new frame, in the order given."""
        pairs = sorted(
            ((self._affinity(t.box, b), ti, bi)
             for ti, t in enumerate(self._tracks) for bi, b in enumerate(boxes)),
            reverse=True,
        )
        assigned: dict[int, int] = {}
        used_tracks: set[int] = set()
        for affinity, ti, bi in pairs:
            if affinity <= 0 or ti in used_tracks or bi in assigned:
                continue
            assigned[bi] = ti
            used_tracks.add(ti)
        indices: list[int] = []
        for bi, box in enumerate(boxes):
            if bi in assigned:
                track = self._tracks[assigned[bi]]
                track.box, track.missed = box, 0
            else:
                track = _Track(self._next_index, box)
                self._next_index += 1
                self._tracks.append(track)
                used_tracks.add(len(self._tracks) - 1)
            indices.append(track.index)
        for ti, track in enumerate(self._tracks):
            if ti not in used_tracks:
                track.missed += 1
        self._tracks = [t for t in self._tracks if t.missed <= self._max_missed]
        return indices
