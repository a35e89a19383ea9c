"""Signals derived from a face: attention (present and roughly frontal).

Valence and arousal come from face_core.emotions.valence_arousal.
"""

from __future__ import annotations

import cv2
import numpy as np

# How far (in pixels of the 48x48 crop) the face's own axis may sit from the crop's centre:
# detector boxes are rarely centred on the nose to the pixel.
AXIS_SEARCH_PX = 4
SYMMETRY_ZERO, SYMMETRY_ONE = 0.2, 0.5  # mirror correlation mapped to 0 and to 1


def frontal_symmetry(face48: np.ndarray) -> float:
    """Left-right symmetry of a face crop, in [0, 1]: a frontal face mirrors onto itself.

    Lighting is taken out first (a difference of Gaussians keeps edges such as eyes, brows,
    nose and mouth, and drops the slow gradient that side light puts across a face); then the
    inner part of the crop is correlated with its mirror image around the best vertical axis
    within `AXIS_SEARCH_PX` of the centre. A correlation of 0.2 or less (random texture scores
    about that) gives 0, and 0.5 or more gives 1.
    """
    if face48.ndim != 2 or min(face48.shape) < 16:
        raise ValueError(f"frontal_symmetry needs a 2-D grayscale crop, got shape {face48.shape}")
    f = face48.astype(np.float32)
    edges = cv2.GaussianBlur(f, (0, 0), 1.0) - cv2.GaussianBlur(f, (0, 0), 6.0)
    h, w = edges.shape
    top, bottom = h // 8, h - h // 8
    half = w // 3  # half the width of the window that is compared with its mirror
    best = -1.0
    for shift in range(-AXIS_SEARCH_PX, AXIS_SEARCH_PX + 1, 2):
        centre = w // 2 + shift
        window = edges[top:bottom, centre - half:centre + half]
        best = max(best, _correlation(window, window[:, ::-1]))
    return float(np.clip((best - SYMMETRY_ZERO) / (SYMMETRY_ONE - SYMMETRY_ZERO), 0.0, 1.0))


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a = a.ravel() - a.mean()
    b = b.ravel() - b.mean()
    denom = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denom) if denom > 0 else 0.0


def attention(face48: np.ndarray, *, detector_frontal: bool) -> float:
    """How much the face is turned towards the camera, in [0, 1]."""
    if not detector_frontal:
        return 0.0
    return frontal_symmetry(face48)
