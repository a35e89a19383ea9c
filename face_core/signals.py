"""Signals derived from a face: attention (present and roughly frontal).

Valence and arousal come from face_core.emotions.valence_arousal.
"""

from __future__ import annotations

import numpy as np


def frontal_symmetry(face48: np.ndarray) -> float:
    """Left-right symmetry of a face crop, in [0, 1]: a frontal face mirrors onto itself.

    It is the correlation between the crop and its mirror image, mapped so that 0.3 or
    less (a face turned well away, or not a face) gives 0 and 0.8 or more gives 1.
    """
    a = face48.astype(np.float32).ravel()
    b = face48[:, ::-1].astype(np.float32).ravel()
    a -= a.mean()
    b -= b.mean()
    denom = float(np.sqrt((a * a).sum() * (b * b).sum()))
    corr = float((a * b).sum() / denom) if denom > 0 else 0.0
    return float(np.clip((corr - 0.3) / 0.5, 0.0, 1.0))


def attention(face48: np.ndarray, *, detector_frontal: bool) -> float:
    """How much the face is turned towards the camera, in [0, 1]."""
    if not detector_frontal:
        return 0.0
    return frontal_symmetry(face48)
