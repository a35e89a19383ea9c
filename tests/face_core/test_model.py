"""The shipped classifier and the full analyzer on real faces."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from confbot.config import DEFAULT_MODEL_MANIFEST
from confbot.errors import ModelError
from confbot.vision import load_classifier
from face_core import EMOTIONS

# Every model shipped in models/: the default and any other a setting can choose.
SHIPPED = sorted(DEFAULT_MODEL_MANIFEST.parent.glob("*.json"))


def test_the_default_model_is_shipped() -> None:
    assert DEFAULT_MODEL_MANIFEST in SHIPPED


@pytest.mark.parametrize("manifest_path", SHIPPED, ids=lambda p: p.stem)
def test_manifest_describes_the_model_file(manifest_path: Path) -> None:
    manifest = json.loads(manifest_path.read_text())
    assert manifest["classes"] == list(EMOTIONS)
    assert (manifest_path.parent / manifest["file"]).is_file()
    assert (manifest_path.parent / manifest["weights"]["file"]).is_file()


@pytest.mark.parametrize("manifest_path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_models_score_a_dim_flat_face_as_the_face(manifest_path: Path,
                                                          publictest_path: Path) -> None:
    # FER2013's faces were equalized (a mean near 131 and a spread near 77 grey levels, each);
    # a call's faces are not, so the manifest moves each face to those statistics first.
    assert json.loads(manifest_path.read_text())["input"]["standardize"] == {"mean": 131.0,
                                                                          "sd": 77.5}
    faces = np.load(publictest_path)["x"][:200]
    dim = np.rint(64 + faces.astype(np.float32) * 0.3).astype(np.uint8)
    clf = load_classifier(manifest_path, tta="none")
    assert (clf.classify(dim).argmax(1) == clf.classify(faces).argmax(1)).mean() > 0.9


def test_corrupt_model_file_is_refused(tmp_path: Path) -> None:
    manifest = json.loads(DEFAULT_MODEL_MANIFEST.read_text())
    (tmp_path / manifest["file"]).write_bytes(b"not a model")
    (tmp_path / "m.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="sha256"):
        load_classifier(tmp_path / "m.json")
    with pytest.raises(ModelError, match="not found"):
        load_classifier(tmp_path / "missing.json")


@pytest.mark.parametrize("manifest_path", SHIPPED, ids=lambda p: p.stem)
@pytest.mark.parametrize("tta", ["flip", "ten-crop"])
def test_classifier_gives_probabilities_and_its_tta_is_mirror_invariant(
        tta: str, manifest_path: Path) -> None:
    clf = load_classifier(manifest_path, tta=tta)
    faces = np.random.default_rng(1).integers(0, 256, (5, 48, 48), dtype=np.uint8)
    probs = clf.classify(faces)
    assert probs.shape == (5, 7)
    assert np.allclose(probs.sum(1), 1, atol=1e-5)
    assert np.allclose(clf.classify(faces[:, :, ::-1].copy()), probs, atol=1e-5)
    assert clf.classify(np.zeros((0, 48, 48), np.uint8)).shape == (0, 7)


def test_ten_crop_averages_its_views_face_by_face() -> None:
    from face_core.classify import TTA_VIEWS, _view

    faces = np.random.default_rng(2).integers(0, 256, (3, 48, 48), dtype=np.uint8)
    single = load_classifier(DEFAULT_MODEL_MANIFEST, tta="none")
    ten = load_classifier(DEFAULT_MODEL_MANIFEST, tta="ten-crop")
    # Each face is standardized once, before its views are cut; a view standardized again on
    # its own would differ a little. The views alone are what this test is about.
    for clf in (single, ten):
        clf.manifest = dataclasses.replace(clf.manifest, standardize=None)
    by_view = [single.classify(_view(faces[..., None], v)[..., 0].copy())
               for v in TTA_VIEWS["ten-crop"]]
    expected = np.mean(by_view, axis=0)
    got = ten.classify(faces)
    # Within 1e-3: the int8 model's scores sum to 1 only to within its 1/256 output steps, and
    # the single-view classifier renormalises each view before they are averaged.
    assert np.allclose(got, expected, atol=1e-3)
    assert not np.allclose(by_view[0], by_view[1], atol=1e-3)  # the views do differ


@pytest.mark.parametrize("tta", ["flip", "ten-crop"])
def test_a_margin_sends_only_the_unsure_faces_through_the_other_views(
        publictest_path: Path, tta: str) -> None:
    faces = np.load(publictest_path)["x"][:64]
    first = load_classifier(DEFAULT_MODEL_MANIFEST, tta="none").classify(faces)
    every = load_classifier(DEFAULT_MODEL_MANIFEST, tta=tta).classify(faces)
    top2 = np.sort(first, axis=1)[:, -2:]
    unsure = top2[:, 1] - top2[:, 0] < 0.5
    assert 0 < unsure.sum() < len(faces)  # both kinds among these faces

    gated = load_classifier(DEFAULT_MODEL_MANIFEST, tta=tta, tta_margin=0.5)
    got = np.concatenate([gated.classify(faces[i:i + 8]) for i in range(0, len(faces), 8)])
    assert np.allclose(got[~unsure], first[~unsure], atol=1e-6)  # the first view's scores
    assert np.allclose(got[unsure], every[unsure], atol=1e-3)  # every view's average
    assert (gated.faces_classified, gated.faces_in_all_views) == (64, unsure.sum())
    with pytest.raises(ValueError, match=r"tta_margin must be in \(0, 1\]"):
        load_classifier(DEFAULT_MODEL_MANIFEST, tta=tta, tta_margin=0)


def test_a_view_is_a_shifted_crop_with_replicated_edges() -> None:
    from face_core.classify import _view

    x = np.arange(48 * 48, dtype=np.float32).reshape(1, 48, 48, 1)
    right_down = _view(x, (2, 2, False))
    assert np.array_equal(right_down[0, :-2, :-2], x[0, 2:, 2:])
    assert np.array_equal(right_down[0, -1, -1], x[0, -1, -1])  # edge replicated
    assert np.array_equal(_view(x, (0, 0, True))[0], x[0, :, ::-1])
    with pytest.raises(ValueError, match="tta must be one of"):
        load_classifier(DEFAULT_MODEL_MANIFEST, tta="twelve-crop")


@pytest.mark.parametrize("manifest_path", SHIPPED, ids=lambda p: p.stem)
def test_classifier_beats_chance_clearly_on_publictest(publictest_path: Path,
                                                       manifest_path: Path) -> None:
    data = np.load(publictest_path)
    clf = load_classifier(manifest_path)
    x, y = data["x"][:600], data["y"][:600]
    acc = float((clf.classify(x).argmax(1) == y).mean())
    assert acc > 0.45  # chance is 0.25 (always "happy"); the card gives the full figure


def test_analyzer_finds_the_smiling_face_in_a_real_photo(analyzer, face_photo_bgr) -> None:  # type: ignore[no-untyped-def]
    faces = analyzer.analyze_image(face_photo_bgr)
    assert len(faces) == 1
    face = faces[0]
    assert face.top_emotion == "happy"
    assert face.valence > 0.3
    x, y, w, h = face.box.as_list()
    assert 150 < x + w / 2 < 300 and 60 < y + h / 2 < 180  # her face, not the flag


def test_stream_keeps_the_face_index_and_smooths(analyzer, face_photo_bgr) -> None:  # type: ignore[no-untyped-def]
    stream = analyzer.new_stream()
    first = analyzer.analyze_batch([(stream, face_photo_bgr)])[0]
    shifted = np.roll(face_photo_bgr, 12, axis=1)
    second = analyzer.analyze_batch([(stream, shifted)])[0]
    assert [f.face_index for f in first] == [f.face_index for f in second] == [0]


def test_no_face_gives_an_empty_result(analyzer) -> None:  # type: ignore[no-untyped-def]
    assert analyzer.analyze_image(np.full((360, 640, 3), 127, np.uint8)) == []


class _CountingDetector:
    """The real Haar detector, recording the size of every image it is asked to search."""

    def __init__(self) -> None:
        from face_core.detect import HaarFaceDetector

        self.inner = HaarFaceDetector()
        self.shapes: list[tuple[int, ...]] = []

    def detect(self, gray):  # type: ignore[no-untyped-def]
        self.shapes.append(gray.shape)
        return self.inner.detect(gray)


class _NearCountingDetector(_CountingDetector):
    """The same, with the optional `detect_near` for windows around tracked faces."""

    def __init__(self) -> None:
        super().__init__()
        self.near: list[tuple[int, ...]] = []

    def detect_near(self, gray):  # type: ignore[no-untyped-def]
        self.near.append(gray.shape)
        return self.inner.detect(gray)


def test_a_detector_with_detect_near_is_asked_that_around_tracked_faces(analyzer, face_photo_bgr) -> None:  # type: ignore[no-untyped-def]
    from face_core.analyzer import FaceAnalyzer

    detector = _NearCountingDetector()
    tracked = FaceAnalyzer(detector=detector, classifier=analyzer.classifier, full_detect_every=3)
    frame = np.ascontiguousarray(face_photo_bgr)
    stream = tracked.new_stream()
    results = [tracked.analyze_batch([(stream, frame)])[0] for _ in range(6)]
    assert detector.shapes == [frame.shape[:2]] * 2  # frames 0 and 3: the whole frame
    assert len(detector.near) == 4 and all(s[0] < frame.shape[0] / 2 for s in detector.near)
    assert [[f.face_index for f in faces] for faces in results] == [[0]] * 6


def test_stream_searches_the_whole_frame_only_every_nth_frame(analyzer, face_photo_bgr) -> None:  # type: ignore[no-untyped-def]
    import numpy as np

    from face_core.analyzer import FaceAnalyzer

    detector = _CountingDetector()
    tracked = FaceAnalyzer(detector=detector, classifier=analyzer.classifier, full_detect_every=3)
    frame = np.ascontiguousarray(face_photo_bgr)
    stream = tracked.new_stream()
    results = [tracked.analyze_batch([(stream, frame)])[0] for _ in range(6)]
    full = [s for s in detector.shapes if s == frame.shape[:2]]
    assert len(full) == 2  # frames 0 and 3
    assert len(detector.shapes) == 6
    assert all(s[0] < frame.shape[0] / 2 for s in detector.shapes if s != frame.shape[:2])
    # The face keeps its index and its box stays on the face found by the full search.
    assert [[f.face_index for f in faces] for faces in results] == [[0]] * 6
    first = results[0][0].box
    assert all(faces[0].box.iou(first) > 0.6 for faces in results)
    assert all(faces[0].top_emotion == "happy" for faces in results)


def test_streams_take_turns_for_whole_frame_searches(analyzer, face_photo_bgr) -> None:  # type: ignore[no-untyped-def]
    import numpy as np

    from face_core.analyzer import FaceAnalyzer

    detector = _CountingDetector()
    tracked = FaceAnalyzer(detector=detector, classifier=analyzer.classifier, full_detect_every=3)
    frame = np.ascontiguousarray(face_photo_bgr)
    streams = [tracked.new_stream() for _ in range(3)]
    full_per_batch = []
    for _ in range(7):
        before = len(detector.shapes)
        batch = tracked.analyze_batch([(stream, frame) for stream in streams])
        assert [len(faces) for faces in batch] == [1, 1, 1]
        full_per_batch.append(sum(s == frame.shape[:2] for s in detector.shapes[before:]))
    # All three search the first frame whole (nothing tracked yet), then one stream per batch.
    assert full_per_batch == [3, 1, 1, 1, 1, 1, 1]


def test_a_face_that_is_gone_triggers_a_whole_frame_search(analyzer, face_photo_bgr) -> None:  # type: ignore[no-untyped-def]
    import numpy as np

    from face_core.analyzer import FaceAnalyzer

    detector = _CountingDetector()
    tracked = FaceAnalyzer(detector=detector, classifier=analyzer.classifier, full_detect_every=10)
    stream = tracked.new_stream()
    frame = np.ascontiguousarray(face_photo_bgr)
    assert len(tracked.analyze_batch([(stream, frame)])[0]) == 1
    blank = np.full_like(frame, 128)
    assert tracked.analyze_batch([(stream, blank)])[0] == []
    # near search found nothing, so the whole frame was searched too
    assert detector.shapes[-1] == blank.shape[:2] and len(detector.shapes) == 3
