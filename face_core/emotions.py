"""The 7 FER2013 emotions and their place on Russell's circumplex of affect.

Valence (unpleasant to pleasant) and arousal (calm to excited) for each class are the
coordinates of the class's prototype on the circumplex, scaled to [-1, 1]. The values
follow the placements in Russell (1980), "A circumplex model of affect", and the
category centroids reported for AffectNet (Mollahosseini et al., 2017), rounded to one
decimal. Neutral sits at the origin. A face's valence and arousal are the expectation of
these coordinates under its 7 class probabilities, so an uncertain face is pulled
towards the centre instead of jumping between prototypes.
"""

from __future__ import annotations

import numpy as np

EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

# (valence, arousal) per class, in EMOTIONS order.
CIRCUMPLEX: dict[str, tuple[float, float]] = {
    "angry": (-0.6, 0.7),
    "disgust": (-0.7, 0.3),
    "fear": (-0.6, 0.8),
    "happy": (0.8, 0.5),
    "sad": (-0.7, -0.4),
    "surprise": (0.2, 0.8),
    "neutral": (0.0, 0.0),
}

_VA = np.array([CIRCUMPLEX[e] for e in EMOTIONS], dtype=np.float32)


def valence_arousal(scores: np.ndarray) -> np.ndarray:
    """Valence and arousal for probability rows: (N, 7) in, (N, 2) in [-1, 1] out."""
    probs = np.asarray(scores, dtype=np.float32)
    if probs.ndim == 1:
        probs = probs[None, :]
    return probs @ _VA
