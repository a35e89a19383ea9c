"""Faces degraded the way a video call degrades them, for `confbot model robustness`.

FER2013's faces are clean studio-like crops; the faces the product classifies went through a
webcam, a video encoder and a downscale from whatever size the face had in its tile. Each
condition here is one of those losses alone, at a level a user may pick, applied to every face
of a data set the same way each time (the random ones draw from a fixed seed), so that two runs
or two models see the same degraded faces.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from confbot.errors import ConfigError

Degrade = Callable[[np.ndarray, float, np.random.Generator], np.ndarray]

# How much bigger than the data set's faces the encoder sees them: a 48-pixel face scaled by 3
# is 144 pixels tall, a face in a 720p tile of a two-person call. The product then shrinks the
# detector's crop back to the model's 48 pixels, which hides part of the encoder's damage.
ENCODED_SCALE = 3


def _each(faces: np.ndarray, one: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    return np.stack([one(f) for f in faces]).astype(np.uint8)


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _jpeg(faces: np.ndarray, quality: float, _rng: np.random.Generator) -> np.ndarray:
    side = faces.shape[1]
    big = side * ENCODED_SCALE

    def one(face: np.ndarray) -> np.ndarray:
        up = cv2.resize(face, (big, big), interpolation=cv2.INTER_CUBIC)
        ok, data = cv2.imencode(".jpg", up, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        if not ok:
            raise ValueError("OpenCV could not JPEG-encode a face")
        decoded = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)
        if decoded is None:
            raise ValueError("OpenCV could not decode its own JPEG")
        return cv2.resize(decoded, (side, side), interpolation=cv2.INTER_AREA)

    return _each(faces, one)


def _small(faces: np.ndarray, face_px: float, _rng: np.random.Generator) -> np.ndarray:
    side, small = faces.shape[1], int(face_px)
    if small >= side:
        raise ConfigError(f"condition small={face_px:g}: the faces are {side} pixels a side; "
                          "shrink them to fewer")

    def one(face: np.ndarray) -> np.ndarray:
        down = cv2.resize(face, (small, small), interpolation=cv2.INTER_AREA)
        return cv2.resize(down, (side, side), interpolation=cv2.INTER_LINEAR)

    return _each(faces, one)


def _blur(faces: np.ndarray, sigma_px: float, _rng: np.random.Generator) -> np.ndarray:
    return _each(faces, lambda f: cv2.GaussianBlur(f, (0, 0), sigma_px,
                                                   borderType=cv2.BORDER_REFLECT))


def _dark(faces: np.ndarray, gain: float, _rng: np.random.Generator) -> np.ndarray:
    return _to_uint8(faces.astype(np.float32) * gain)


def _contrast(faces: np.ndarray, factor: float, _rng: np.random.Generator) -> np.ndarray:
    return _to_uint8(128.0 + (faces.astype(np.float32) - 128.0) * factor)


def _noise(faces: np.ndarray, sd: float, rng: np.random.Generator) -> np.ndarray:
    return _to_uint8(faces.astype(np.float32) + rng.normal(0.0, sd, faces.shape))


def _tilt(faces: np.ndarray, degrees: float, _rng: np.random.Generator) -> np.ndarray:
    side = faces.shape[1]
    centre = ((side - 1) / 2, (side - 1) / 2)
    turns = [cv2.getRotationMatrix2D(centre, sign * degrees, 1.0) for sign in (1, -1)]
    # Every other face leans the other way, so that a bias to one side cannot hide the loss.
    return np.stack([cv2.warpAffine(f, turns[i % 2], (side, side), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_REFLECT)
                     for i, f in enumerate(faces)]).astype(np.uint8)


@dataclass(frozen=True)
class ConditionKind:
    """One way to degrade faces: its level's unit, default, and the levels it accepts."""

    name: str
    unit: str
    default: float
    low: float
    high: float
    what: str  # what a level means, "{level}" standing for it
    degrade: Degrade
    whole: bool = False  # the level must be a whole number


KINDS: dict[str, ConditionKind] = {k.name: k for k in (
    ConditionKind("jpeg", "quality", 25, 1, 100, whole=True, degrade=_jpeg,
                  what=f"scaled x{ENCODED_SCALE}, JPEG at quality {{level}}, scaled back "
                       "(a stand-in for the call's video encoder)"),
    ConditionKind("small", "px", 20, 4, 47, whole=True, degrade=_small,
                  what="shrunk to {level} pixels a side and scaled back (a small tile)"),
    ConditionKind("blur", "sigma_px", 1.0, 0.1, 10, degrade=_blur,
                  what="Gaussian blur of {level} pixels (out of focus, motion)"),
    ConditionKind("dark", "gain", 0.35, 0.05, 0.99, degrade=_dark,
                  what="brightness times {level}, kept to whole grey levels (low light)"),
    ConditionKind("contrast", "factor", 0.4, 0.05, 0.99, degrade=_contrast,
                  what="contrast times {level} about mid-grey (backlight, haze)"),
    ConditionKind("noise", "sd", 10, 1, 128, degrade=_noise,
                  what="Gaussian noise of {level} grey levels (a sensor in low light)"),
    ConditionKind("tilt", "degrees", 15, 1, 45, degrade=_tilt,
                  what="turned {level} degrees, every other face the other way (a head tilt)"),
)}


@dataclass(frozen=True)
class Condition:
    """A kind of degradation at one level."""

    kind: ConditionKind
    level: float

    @property
    def label(self) -> str:
        return f"{self.kind.name}={self.level:g}"

    def describe(self) -> str:
        return self.kind.what.format(level=f"{self.level:g}")

    def apply(self, faces: np.ndarray, seed: int = 0) -> np.ndarray:
        """`faces` (N, H, W) uint8, degraded; the same faces and seed give the same result."""
        if faces.ndim != 3 or faces.dtype != np.uint8:
            raise ValueError(f"faces must be uint8 (N, H, W), got {faces.dtype} {faces.shape}")
        return self.kind.degrade(faces, self.level, np.random.default_rng(seed))


def parse_condition(spec: str) -> Condition:
    """`name` (at its default level) or `name=level`, e.g. "jpeg" or "jpeg=10"."""
    name, sep, raw = spec.strip().partition("=")
    kind = KINDS.get(name.strip())
    if kind is None:
        raise ConfigError(f"unknown condition {spec!r}: expected one of {', '.join(KINDS)}, "
                          "optionally with =level")
    if not sep:
        return Condition(kind, float(kind.default))
    try:
        level = float(raw)
    except ValueError:
        raise ConfigError(f"condition {spec!r}: the level must be a number ({kind.unit})") from None
    if not kind.low <= level <= kind.high or (kind.whole and level != int(level)):
        whole = " whole" if kind.whole else ""
        raise ConfigError(f"condition {spec!r}: the level ({kind.unit}) must be a{whole} number "
                          f"from {kind.low:g} to {kind.high:g}")
    return Condition(kind, level)


def default_conditions() -> list[Condition]:
    """Every kind, each at its default level."""
    return [Condition(k, float(k.default)) for k in KINDS.values()]
