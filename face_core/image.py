"""Normalising the images callers hand in: any common layout in, 8-bit BGR and gray out."""

from __future__ import annotations

import cv2
import numpy as np

from face_core.errors import ImageError


def to_bgr8(image: np.ndarray) -> np.ndarray:
    """Return `image` as a contiguous (H, W, 3) uint8 BGR array.

    Accepts gray (H, W) or (H, W, 1), BGR (H, W, 3) and BGRA (H, W, 4), in uint8, uint16
    (scaled down to 8 bits) or float in [0, 1]. Raises ImageError for anything else.
    """
    if not isinstance(image, np.ndarray):
        raise ImageError(f"expected a numpy array, got {type(image).__name__}")
    if image.size == 0 or image.ndim not in (2, 3) or min(image.shape[:2]) < 1:
        raise ImageError(f"empty or malformed image of shape {image.shape}")
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype.kind == "f":
        image = (np.clip(np.nan_to_num(image), 0.0, 1.0) * 255).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ImageError(f"unsupported pixel type {image.dtype}; expected 8 or 16 bit")
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.shape[2] == 3:
        return np.ascontiguousarray(image)
    raise ImageError(f"unsupported channel count {image.shape[2]}; expected 1, 3 or 4")


def to_gray(bgr: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)


def downscale(gray: np.ndarray, max_side_px: int) -> tuple[np.ndarray, float]:
    """Shrink so the longer side is at most `max_side_px`; returns the image and the factor."""
    h, w = gray.shape[:2]
    scale = min(1.0, max_side_px / max(h, w))
    if scale >= 1.0:
        return gray, 1.0
    small = cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))),
                       interpolation=cv2.INTER_AREA)
    return small, scale
