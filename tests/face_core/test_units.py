from __future__ import annotations

import cv2
import numpy as np
import pytest

from face_core.emotions import EMOTIONS, valence_arousal
from face_core.errors import ImageError
from face_core.image import to_bgr8
from face_core.preprocess import crop_face
from face_core.signals import frontal_symmetry
from face_core.smooth import ScoreSmoother
from face_core.track import FaceTracker
from face_core.types import Box
from tests.support.media import astronaut_face_bgr


def one_hot(name: str) -> np.ndarray:
    v = np.zeros(7, np.float32)
    v[EMOTIONS.index(name)] = 1
    return v


def test_valence_arousal_prototypes_and_mixtures() -> None:
    assert valence_arousal(one_hot("happy"))[0] == pytest.approx([0.8, 0.5])
    assert valence_arousal(one_hot("neutral"))[0] == pytest.approx([0.0, 0.0])
    mix = (one_hot("happy") + one_hot("sad")) / 2
    assert valence_arousal(mix)[0] == pytest.approx([0.05, 0.05])


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((10, 12), np.uint8),
        np.zeros((10, 12, 1), np.uint8),
        np.zeros((10, 12, 4), np.uint8),
        np.zeros((10, 12, 3), np.uint16),
        np.zeros((10, 12, 3), np.float32),
    ],
)
def test_to_bgr8_accepts_common_layouts(image: np.ndarray) -> None:
    out = to_bgr8(image)
    assert out.shape == (10, 12, 3) and out.dtype == np.uint8


def test_to_bgr8_scales_16_bit() -> None:
    assert to_bgr8(np.full((2, 2), 65535, np.uint16)).max() == 255


@pytest.mark.parametrize(
    "image", [np.zeros((0, 5, 3), np.uint8), np.zeros((4, 4, 2), np.uint8),
              np.zeros((4, 4), np.int64), np.zeros((2, 2, 2, 2), np.uint8)],
)
def test_to_bgr8_refuses_bad_images(image: np.ndarray) -> None:
    with pytest.raises(ImageError):
        to_bgr8(image)


def test_tracker_keeps_indices_while_faces_move() -> None:
    t = FaceTracker()
    assert t.update([Box(0, 0, 50, 50), Box(300, 0, 50, 50)]) == [0, 1]
    # Both moved 30 px (IoU small), listed in the other order.
    assert t.update([Box(330, 10, 50, 50), Box(30, 10, 50, 50)]) == [1, 0]


def test_tracker_new_face_gets_new_index_and_indices_are_not_reused() -> None:
    t = FaceTracker(max_missed=1)
    assert t.update([Box(0, 0, 50, 50)]) == [0]
    assert t.update([]) == []
    assert t.update([]) == []  # missed twice: face 0 is closed
    assert t.update([Box(0, 0, 50, 50)]) == [1]
    assert t.update([Box(0, 0, 50, 50), Box(400, 200, 60, 60)]) == [1, 2]


def test_smoother_is_an_exponential_average_and_forgets_lost_faces() -> None:
    s = ScoreSmoother(0.5)
    s.update(0, one_hot("happy"))
    out = s.update(0, one_hot("sad"))
    assert out[EMOTIONS.index("happy")] == pytest.approx(0.5)
    assert out[EMOTIONS.index("sad")] == pytest.approx(0.5)
    s.retain(set())
    assert s.update(0, one_hot("sad"))[EMOTIONS.index("sad")] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        ScoreSmoother(0)


def test_crop_at_frame_border_keeps_size() -> None:
    gray = np.arange(100 * 100, dtype=np.uint32).reshape(100, 100).astype(np.uint8)
    assert crop_face(gray, Box(-10, 80, 40, 40), size=48, margin=0.2).shape == (48, 48)


def test_symmetry_prefers_mirror_symmetric_crops() -> None:
    rng = np.random.default_rng(0)
    half = rng.integers(0, 255, (48, 24), dtype=np.uint8)
    symmetric = np.concatenate([half, half[:, ::-1]], axis=1)
    assert frontal_symmetry(symmetric) == pytest.approx(1.0)
    assert frontal_symmetry(rng.integers(0, 255, (48, 48), dtype=np.uint8)) < 0.1


def test_a_frontal_face_in_side_light_reads_as_attentive() -> None:
    face = cv2.resize(cv2.cvtColor(astronaut_face_bgr(0.0), cv2.COLOR_BGR2GRAY), (48, 48))
    lit_from_the_left = np.clip(face * np.linspace(1.3, 0.6, 48)[None, :], 0, 255).astype(np.uint8)
    assert frontal_symmetry(face) >= 0.8
    assert frontal_symmetry(lit_from_the_left) >= 0.8
    # half the face out of its box, as when a head turns away: much less symmetric
    assert frontal_symmetry(np.roll(face, 16, axis=1)) < 0.3


def test_standardize_moves_each_face_to_the_target_brightness_and_contrast() -> None:
    from face_core.classify import MIN_FACE_SD, standardize_faces

    rng = np.random.default_rng(3)
    faces = rng.integers(40, 220, (4, 48, 48)).astype(np.uint8)
    out = standardize_faces(faces, 131.0, 77.4)
    assert out.dtype == np.float32 and out.shape == faces.shape
    assert 0 <= out.min() and out.max() <= 255
    # Darker or flatter copies of the same face come out (nearly) the same face.
    dark = np.rint(faces * 0.35).astype(np.uint8)
    flat = np.rint(128 + (faces.astype(np.float32) - 128) * 0.4).astype(np.uint8)
    for worse in (dark, flat):
        assert np.abs(standardize_faces(worse, 131.0, 77.4) - out).mean() < 2.0
    # A face that was already like that is left as it was, give or take the clipping.
    unclipped = (out > 0) & (out < 255)
    same = standardize_faces(np.rint(out).astype(np.uint8), 131.0, 77.4)
    assert np.abs(same - out)[unclipped].mean() < 1.0
    # A flat face (a grey wall, a covered camera) is moved to the mean, not stretched.
    wall = np.full((1, 48, 48), 30, np.uint8)
    wall[0, 0, 0] = 31
    assert faces.std() > MIN_FACE_SD > wall.std()
    assert np.allclose(standardize_faces(wall, 131.0, 77.4), wall - wall.mean() + 131.0)


@pytest.mark.parametrize("bad", [{"mean": 300, "sd": 50}, {"mean": 100, "sd": 0},
                                 {"mean": 100}, {"mean": "x", "sd": 1}, [1, 2]])
def test_a_bad_standardize_entry_in_a_manifest_is_refused(bad: object) -> None:
    from face_core.classify import ModelManifest
    from face_core.errors import ArtifactError

    raw = {"file": "m.tflite", "sha256": "0" * 64, "classes": list(EMOTIONS),
           "input": {"size": 48, "color": "gray", "scale": 1 / 255, "offset": 0.0}}
    assert ModelManifest.from_dict(raw).standardize is None
    good = ModelManifest.from_dict({**raw, "input": {**raw["input"],
                                                     "standardize": {"mean": 131, "sd": 77.4}}})
    assert good.standardize == (131.0, 77.4)
    with pytest.raises(ArtifactError, match="bad field"):
        ModelManifest.from_dict({**raw, "input": {**raw["input"], "standardize": bad}})
