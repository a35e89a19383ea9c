"""Temporal smoothing of each face's scores."""

from __future__ import annotations

import numpy as np


class ScoreSmoother:
    """Exponential moving average per face index.

    `alpha` is the weight of the newest scores: 1 disables smoothing. At 2 samples per
    second, 0.5 halves a one-sample blip while following a real change within a second.
    """

    def __init__(self, alpha: float = 0.5) -> None:
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self._alpha = alpha
        self._state: dict[int, np.ndarray] = {}

    def update(self, face_index: int, scores: np.ndarray) -> np.ndarray:
        prev = self._state.get(face_index)
        new = scores if prev is None else self._alpha * scores + (1 - self._alpha) * prev
        self._state[face_index] = new
        return new

    def retain(self, live: set[int]) -> None:
        """Forget faces that are no longer tracked, so state stays bounded."""
        for index in list(self._state):
            if index not in live:
                del self._state[index]
