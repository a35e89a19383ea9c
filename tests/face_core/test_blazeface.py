"""BlazeFace: the anchor grid and decoder (pure logic), and the real model on a real photo."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from face_core import ArtifactError, BlazeFaceDetector, HaarFaceDetector
from face_core.blazeface import ANCHORS, RawFace, anchor_centres, decode, weighted_suppression
from face_core.types import Box, Detection


def test_the_anchor_grid_is_the_short_range_models() -> None:
    anchors = anchor_centres()
    assert anchors.shape == (896, 2)
    # 16x16 cells of stride 8, two anchors each, row by row ...
    assert anchors[0] == pytest.approx([1 / 32, 1 / 32]) and anchors[1] == pytest.approx(anchors[0])
    assert anchors[2] == pytest.approx([3 / 32, 1 / 32])
    assert anchors[32] == pytest.approx([1 / 32, 3 / 32])
    # ... then 8x8 cells of stride 16, six anchors each.
    assert anchors[512:518] == pytest.approx(np.tile([1 / 16, 1 / 16], (6, 1)))
    assert anchors[-1] == pytest.approx([15 / 16, 15 / 16])


def test_decode_turns_regressors_into_boxes_around_their_anchor() -> None:
    regressors = np.zeros((len(ANCHORS), 16), np.float32)
    logits = np.full(len(ANCHORS), -20.0, np.float32)
    k = 600
    regressors[k, :4] = [6.4, -12.8, 32.0, 38.4]  # offsets and size in input pixels
    regressors[k, 4:6] = [-9.6, -6.4]  # first keypoint
    logits[k] = 3.0
    faces = decode(regressors, logits, ANCHORS, threshold=0.5)
    assert len(faces) == 1
    f = faces[0]
    ax, ay = ANCHORS[k]
    assert (f.cx, f.cy) == pytest.approx((ax + 0.05, ay - 0.1))
    assert (f.w, f.h) == pytest.approx((0.25, 0.3))
    assert f.keypoints[0] == pytest.approx([ax - 0.075, ay - 0.05])
    assert f.score == pytest.approx(1 / (1 + np.exp(-3.0)))
    # Logits far beyond float range are clipped, not turned into NaN.
    logits[k] = 1e30
    assert decode(regressors, logits, ANCHORS, threshold=0.5)[0].score == pytest.approx(1.0)
    assert decode(regressors, np.full(len(ANCHORS), -20.0), ANCHORS, threshold=0.5) == []


def _raw(cx: float, cy: float, side: float, score: float) -> RawFace:
    return RawFace(cx, cy, side, side, score, np.full((6, 2), cx))


def test_weighted_suppression_merges_overlapping_faces_by_score() -> None:
    faces = [_raw(0.5, 0.5, 0.2, 0.6), _raw(0.2, 0.2, 0.1, 0.7), _raw(0.52, 0.5, 0.2, 0.9)]
    merged = weighted_suppression(faces)
    assert len(merged) == 2
    top = merged[0]
    assert top.score == 0.9  # the best candidate's score
    assert top.cx == pytest.approx((0.5 * 0.6 + 0.52 * 0.9) / 1.5)  # score-weighted position
    assert merged[1].cx == pytest.approx(0.2)
    assert weighted_suppression([]) == []


@pytest.fixture(scope="module")
def blazeface_model() -> bytes:
    from confbot.vision import BLAZEFACE_WHEEL, default_blazeface_model

    path = default_blazeface_model()
    if path is None:
        pytest.skip(f"BlazeFace's model file is not installed ({BLAZEFACE_WHEEL}; `make setup` "
                    "installs it)")
    return path.read_bytes()


@pytest.fixture(scope="module")
def astronaut_gray() -> np.ndarray:
    data = pytest.importorskip("skimage.data", reason="scikit-image supplies the test photo")
    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY)


def test_blazeface_finds_the_face_in_a_real_photo_where_haar_does(
        blazeface_model: bytes, astronaut_gray: np.ndarray) -> None:
    found = BlazeFaceDetector(blazeface_model).detect(astronaut_gray)
    assert len(found) == 1
    haar = HaarFaceDetector().detect(astronaut_gray)
    assert len(haar) == 1
    # Calibrated to FER2013's framing, which Haar's box also matches (margin 0).
    assert found[0].box.iou(haar[0].box) > 0.6
    assert found[0].frontal and found[0].score > 0.7
    # A frame with no face gives nothing.
    assert BlazeFaceDetector(blazeface_model).detect(np.full((360, 640), 128, np.uint8)) == []


class _Proposes:
    """A finder that proposes fixed boxes."""

    def __init__(self, *boxes: Box) -> None:
        self.boxes = boxes

    def detect(self, gray: np.ndarray) -> list[Detection]:
        return [Detection(b, score=0.5) for b in self.boxes]


def _small_face_frame(astronaut_gray: np.ndarray) -> tuple[np.ndarray, Box]:
    """The astronaut's head and shoulders at 0.45 scale in a 640x360 frame (face about 50 px,
    too small for BlazeFace's whole-frame view), with Haar's box of the face."""
    head = cv2.resize(astronaut_gray[20:300, 90:340], None, fx=0.45, fy=0.45)
    frame = np.full((360, 640), 90, np.uint8)
    frame[360 - head.shape[0]:, 200:200 + head.shape[1]] = head
    haar = HaarFaceDetector(min_face_px=24).detect(frame)
    assert len(haar) == 1
    return frame, haar[0].box


def test_a_small_face_the_finder_proposes_is_framed_by_blazeface(
        blazeface_model: bytes, astronaut_gray: np.ndarray) -> None:
    frame, face = _small_face_frame(astronaut_gray)
    assert BlazeFaceDetector(blazeface_model).detect(frame) == []
    # A rough proposal: shifted by a fifth of the face and too big.
    proposal = Box(face.x + face.w // 5, face.y - face.h // 5, face.w * 5 // 4, face.h * 5 // 4)
    found = BlazeFaceDetector(blazeface_model, finder=_Proposes(proposal)).detect(frame)
    assert len(found) == 1
    assert found[0].box != proposal
    assert found[0].box.iou(face) > 0.6 > proposal.iou(face)


class _Counts(_Proposes):
    """A finder that proposes fixed boxes and counts its searches."""

    calls = 0

    def detect(self, gray: np.ndarray) -> list[Detection]:
        self.calls += 1
        return super().detect(gray)


def test_near_a_tracked_face_the_finder_runs_only_when_blazeface_sees_nothing(
        blazeface_model: bytes, astronaut_gray: np.ndarray) -> None:
    frame, face = _small_face_frame(astronaut_gray)
    # The window the analyzer cuts around a tracked face: twice its size.
    window = frame[max(0, face.y - face.h // 2):face.y + face.h * 3 // 2,
                   max(0, face.x - face.w // 2):face.x + face.w * 3 // 2]
    decoy = Box(2, 2, 30, 30)
    finder = _Counts(decoy)
    detector = BlazeFaceDetector(blazeface_model, finder=finder)
    near = detector.detect_near(window)
    assert finder.calls == 0 and len(near) == 1  # the face, and no search for others
    assert len(detector.detect(window)) == 2 and finder.calls == 1  # the decoy too
    blank = np.full_like(window, 90)
    assert [d.box for d in detector.detect_near(blank)] == [decoy] and finder.calls == 2
    with pytest.raises(ValueError, match="8-bit"):
        detector.detect_near(window.astype(np.float32))


def test_a_proposal_blazeface_cannot_confirm_is_kept(blazeface_model: bytes,
                                                     astronaut_gray: np.ndarray) -> None:
    frame = astronaut_gray.copy()
    frame[:120, :120] = 128
    whole = BlazeFaceDetector(blazeface_model).detect(frame)
    assert len(whole) == 1
    blank = Box(20, 20, 60, 60)
    found = BlazeFaceDetector(blazeface_model, finder=_Proposes(blank)).detect(frame)
    assert [d.box for d in found] == [whole[0].box, blank]


@pytest.mark.parametrize("change", ["shifted", "half", "double", "off by 0.45"])
def test_a_proposal_on_a_face_already_found_adds_no_second_face(
        blazeface_model: bytes, astronaut_gray: np.ndarray, change: str) -> None:
    whole = BlazeFaceDetector(blazeface_model).detect(astronaut_gray)
    assert len(whole) == 1
    b = whole[0].box
    proposal = {
        "shifted": Box(b.x + 3, b.y, b.w, b.h),
        "half": Box(b.x + b.w // 4, b.y + b.h // 4, b.w // 2, b.h // 2),  # inside: IoU 0.25
        "double": Box(b.x - b.w // 2, b.y - b.h // 2, b.w * 2, b.h * 2),
        "off by 0.45": Box(b.x + b.w * 45 // 100, b.y, b.w, b.h),
    }[change]
    found = BlazeFaceDetector(blazeface_model, finder=_Proposes(proposal)).detect(astronaut_gray)
    assert [d.box for d in found] == [b]


def test_blazeface_does_not_take_a_face_of_another_size_for_the_proposal(
        blazeface_model: bytes, astronaut_gray: np.ndarray) -> None:
    frame, face = _small_face_frame(astronaut_gray)
    # A proposal a third of the face's size on its centre: the face BlazeFace sees in the
    # window is three times the proposal, so it is not taken for it.
    third = Box(face.x + face.w // 3, face.y + face.h // 3, face.w // 3, face.h // 3)
    found = BlazeFaceDetector(blazeface_model, finder=_Proposes(third)).detect(frame)
    assert [d.box for d in found] == [third]


@pytest.mark.parametrize(("height", "width", "top", "left"),
                         [(620, 800, 10, 190), (800, 620, 190, 10), (600, 840, 0, 0),
                          (700, 900, 100, 300)])
def test_letterboxed_boxes_land_on_the_face_in_frames_of_any_shape(
        blazeface_model: bytes, astronaut_gray: np.ndarray, height: int, width: int, top: int,
        left: int) -> None:
    photo = cv2.resize(astronaut_gray[:300, 60:360], (600, 600))  # head and shoulders
    detector = BlazeFaceDetector(blazeface_model)
    alone = detector.detect(photo)
    assert len(alone) == 1
    frame = np.full((height, width), 100, np.uint8)
    frame[top:top + 600, left:left + 600] = photo
    found = detector.detect(frame)
    assert len(found) == 1
    b = found[0].box
    # The same face, in the frame's pixels: only the offset differs (and the input's scale).
    assert Box(b.x - left, b.y - top, b.w, b.h).iou(alone[0].box) > 0.85


def test_colour_frames_are_taken_and_other_pixel_types_refused(
        blazeface_model: bytes, astronaut_gray: np.ndarray) -> None:
    detector = BlazeFaceDetector(blazeface_model)
    bgr = cv2.cvtColor(astronaut_gray, cv2.COLOR_GRAY2BGR)
    assert [d.box for d in detector.detect(bgr)] == [d.box for d in detector.detect(astronaut_gray)]
    with pytest.raises(ValueError, match="8-bit"):
        detector.detect(astronaut_gray.astype(np.float32))


def test_non_finite_model_outputs_are_no_face() -> None:
    regressors = np.zeros((len(ANCHORS), 16), np.float32)
    regressors[5, 0] = np.nan
    logits = np.full(len(ANCHORS), -20.0, np.float32)
    logits[5] = logits[6] = 5.0
    faces = decode(regressors, logits, ANCHORS, threshold=0.5)
    assert len(faces) == 1 and np.isfinite(faces[0].cx)


def test_suppression_takes_identical_candidates_as_one() -> None:
    twins = [_raw(0.5, 0.5, 0.2, 0.8), _raw(0.5, 0.5, 0.2, 0.8)]
    merged = weighted_suppression(twins)
    assert len(merged) == 1 and merged[0].cx == pytest.approx(0.5)


def test_a_file_that_is_not_blazeface_is_refused(blazeface_model: bytes) -> None:
    from confbot.config import REPO_ROOT

    emotion_model = (REPO_ROOT / "models" / "emotion_cnn.tflite").read_bytes()
    with pytest.raises(ArtifactError, match="not BlazeFace short-range"):
        BlazeFaceDetector(emotion_model)
    with pytest.raises(ArtifactError, match="not a loadable BlazeFace model"):
        BlazeFaceDetector(blazeface_model[: len(blazeface_model) // 2])


@pytest.mark.parametrize("shape", [(1, 1), (2, 700), (700, 3), (9, 9)])
def test_degenerate_frames_give_no_faces_and_no_error(blazeface_model: bytes,
                                                      shape: tuple[int, int]) -> None:
    detector = BlazeFaceDetector(blazeface_model, finder=HaarFaceDetector(min_face_px=24))
    for value in (0, 255):
        assert detector.detect(np.full(shape, value, np.uint8)) == []


def test_a_proposal_running_off_the_frame_is_looked_at_with_the_frame_padded(
        blazeface_model: bytes, astronaut_gray: np.ndarray) -> None:
    # The astronaut's head, small and cut by the frame's left edge: neither BlazeFace's view of
    # the whole frame nor Haar finds it; a proposal that runs off the frame leads BlazeFace to it.
    head = cv2.resize(astronaut_gray[20:300, 190:340], None, fx=0.45, fy=0.45)
    frame = np.full((360, 640), 90, np.uint8)
    frame[360 - head.shape[0]:, :head.shape[1]] = head
    assert BlazeFaceDetector(blazeface_model).detect(frame) == []
    proposal = Box(-20, 250, 50, 50)
    found = BlazeFaceDetector(blazeface_model, finder=_Proposes(proposal)).detect(frame)
    assert len(found) == 1 and found[0].box != proposal
    assert found[0].score > 0.7  # BlazeFace's own score, not the proposal's 0.5
    assert found[0].box.iou(proposal) > 0.5
