"""The degradations of `confbot model robustness`: what each does to a face, and their levels."""

from __future__ import annotations

import numpy as np
import pytest

from confbot.errors import ConfigError
from confbot.modeling.conditions import KINDS, default_conditions, parse_condition
from confbot.modeling.data import face_statistics
from tests.support.media import astronaut_face_bgr


@pytest.fixture(scope="module")
def faces() -> np.ndarray:
    import cv2

    gray = cv2.cvtColor(astronaut_face_bgr(), cv2.COLOR_BGR2GRAY)
    face = cv2.resize(gray, (48, 48), interpolation=cv2.INTER_AREA)
    return np.stack([face, face[:, ::-1], np.roll(face, 3, axis=0)])


def test_every_condition_keeps_the_faces_shape_and_is_repeatable(faces: np.ndarray) -> None:
    for condition in default_conditions():
        out = condition.apply(faces, seed=5)
        assert out.shape == faces.shape and out.dtype == np.uint8, condition.label
        assert not np.array_equal(out, faces), condition.label  # it does something
        assert np.array_equal(out, condition.apply(faces, seed=5)), condition.label
    noise = parse_condition("noise")
    assert not np.array_equal(noise.apply(faces, seed=5), noise.apply(faces, seed=6))


def test_what_the_levels_do(faces: np.ndarray) -> None:
    def loss(spec: str) -> float:
        return float(np.abs(parse_condition(spec).apply(faces).astype(float) - faces).mean())

    for kind, mild, harsh in (("jpeg", "90", "5"), ("small", "40", "12"), ("blur", "0.5", "3"),
                              ("dark", "0.9", "0.2"), ("contrast", "0.9", "0.2"),
                              ("noise", "3", "40"), ("tilt", "3", "30")):
        assert loss(f"{kind}={mild}") < loss(f"{kind}={harsh}"), kind
    dark = parse_condition("dark=0.5").apply(faces)
    assert np.abs(dark.astype(float) - faces / 2).max() <= 0.5
    flat = parse_condition("contrast=0.5").apply(faces).astype(float)
    assert flat.std() == pytest.approx(faces.std() / 2, rel=0.02)
    # Every other face turns the other way: a face and its mirror image stay mirrors.
    tilted = parse_condition("tilt=20").apply(faces)
    assert np.abs(tilted[0].astype(float) - tilted[1][:, ::-1]).mean() < 1.0


def test_levels_are_parsed_and_bad_ones_refused() -> None:
    jpeg = parse_condition("jpeg")
    assert (jpeg.kind.name, jpeg.level, jpeg.label) == ("jpeg", 25.0, "jpeg=25")
    assert parse_condition(" blur=1.5 ").label == "blur=1.5"
    assert "JPEG at quality 10" in parse_condition("jpeg=10").describe()
    assert [c.kind.name for c in default_conditions()] == list(KINDS)
    for bad, says in (("fog", "unknown condition 'fog': expected one of jpeg, small"),
                      ("jpeg=", "must be a number"), ("jpeg=high", "must be a number"),
                      ("jpeg=0", "whole number from 1 to 100"),
                      ("jpeg=50.5", "whole number from 1 to 100"),
                      ("dark=1.5", "from 0.05 to 0.99"), ("blur=nan", "from 0.1 to 10"),
                      ("noise=inf", "from 1 to 128")):
        with pytest.raises(ConfigError, match=says):
            parse_condition(bad)


def test_small_must_shrink_the_faces() -> None:
    tiny = np.zeros((2, 16, 16), np.uint8)
    with pytest.raises(ConfigError, match="16 pixels a side"):
        parse_condition("small=20").apply(tiny)
    with pytest.raises(ValueError, match="uint8"):
        parse_condition("blur").apply(tiny.astype(np.float32))


def test_face_statistics_are_the_mean_level_and_the_mean_contrast() -> None:
    x = np.zeros((3, 4, 4), np.uint8)
    x[0], x[1, :2], x[2] = 100, 200, 50  # face 1: half 200, half 0
    assert face_statistics(x) == (round((100 + 100 + 50) / 3, 1), round(100 / 3, 1))
    assert face_statistics(x, chunk=2) == face_statistics(x)
