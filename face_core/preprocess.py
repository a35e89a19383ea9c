"""Cropping faces out of frames into the classifier's input format."""

from __future__ import annotations

import cv2
import numpy as np

from face_core.types import Box


def square_region(gray: np.ndarray, x0: int, y0: int, side: int, *,
                  border: int = cv2.BORDER_REPLICATE) -> np.ndarray:
    """The (side, side) region of `gray` at (x0, y0); where it runs off the frame, the frame is
    padded with `border` (an OpenCV border mode; BORDER_CONSTANT pads with black)."""
    h, w = gray.shape[:2]
    pad = max(0, -x0, -y0, x0 + side - w, y0 + side - h)
    if pad:
        gray = cv2.copyMakeBorder(gray, pad, pad, pad, pad, border, value=0)
    return gray[y0 + pad:y0 + pad + side, x0 + pad:x0 + pad + side]


def crop_face(gray: np.ndarray, box: Box, *, size: int, margin: float) -> np.ndarray:
    """A (size, size) uint8 crop of `box` grown by `margin` of its size on each side.

    Parts of the grown box outside the frame are filled by replicating the edge, so a face
    at the border keeps its framing instead of being stretched.
    """
    side = max(box.w, box.h) * (1 + 2 * margin)
    cx, cy = box.x + box.w / 2, box.y + box.h / 2
    x0, y0 = round(cx - side / 2), round(cy - side / 2)
    patch = square_region(gray, x0, y0, round(side))
    interp = cv2.INTER_AREA if patch.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(patch, (size, size), interpolation=interp)
