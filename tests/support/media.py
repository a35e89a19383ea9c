"""Test video: one real face on a plain grey background, encoded once to VP8 (IVF).

Faces come from FER2013's PublicTest split (48x48 grey crops, found through the environment
variable CONFBOT_FER2013_DIR, default ../shared/datasets/fer2013 next to the repository) and
from scikit-image's astronaut photo (a real photo of a smiling person).

    path = face_video(cache_dir / "astronaut.ivf", astronaut_face_bgr())

Fixtures (import them in a conftest.py):
- `media_cache_dir`: where videos are kept (pytest's cache, so they are encoded once per machine).
- `astronaut_video`: Path of the astronaut's face video.
- `fer2013_video`: a function, emotion name -> `FaceVideo` (`.path`, `.emotion`, ...): a video of
  one PublicTest face labelled with that emotion that the shipped model (the `analyzer` fixture
  of tests/conftest.py) also gives that emotion, on top, in every checked frame of the encoded
  and decoded video. Skips when FER2013 is absent. The choice is made once per model file (its
  sha256 keys the cache), so a new model of the same interface gets its own faces; when none of
  the first candidates is recognised, the fixture fails, naming the emotion and the model.

The publisher (tests/support/publisher.py) replays such a file in a loop without re-encoding it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from confbot import media_synth

REPO = Path(__file__).resolve().parents[2]
MEDIA_VERSION = 2  # bump when the videos change, so cached copies are rebuilt
VIDEO_WIDTH = 640
VIDEO_HEIGHT = 360
VIDEO_FPS = 15
VIDEO_SECONDS = 4.0
BACKGROUND = media_synth.BACKGROUND  # plain mid grey
FACE_PX = 200

# Where the astronaut's face is in skimage.data.astronaut() (512x512), as found by OpenCV's
# frontal Haar cascade: x, y, width, height.
_ASTRONAUT_FACE_BOX = (177, 66, 95, 95)


def fer2013_dir() -> Path:
    return Path(os.environ.get("CONFBOT_FER2013_DIR", REPO.parent / "shared/datasets/fer2013"))


def fer2013_publictest() -> tuple[np.ndarray, np.ndarray, list[str]] | None:
    """PublicTest as (images uint8 Nx48x48, labels uint8 N, class names), or None if absent."""
    path = fer2013_dir() / "publictest.npz"
    if not path.is_file():
        return None
    with np.load(path) as data:
        return data["x"], data["y"], [str(name) for name in data["classes"]]


def fer2013_face_bgr(images: np.ndarray, index: int) -> np.ndarray:
    """One FER2013 face as a 3-channel BGR image (still 48x48)."""
    gray = np.asarray(images[index], dtype=np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


def astronaut_face_bgr(margin: float = 0.35) -> np.ndarray:
    """The face of skimage's astronaut photo, cropped with `margin` (fraction of the box) around it."""
    import cv2
    from skimage import data

    image = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    x, y, w, h = _ASTRONAUT_FACE_BOX
    dx, dy = int(w * margin), int(h * margin)
    top, left = max(0, y - dy), max(0, x - dx)
    crop = image[top : y + h + dy, left : x + w + dx]
    return np.ascontiguousarray(crop)


def compose_frames(face_bgr: np.ndarray, *, n_frames: int, width: int = VIDEO_WIDTH,
                   height: int = VIDEO_HEIGHT, face_px: int = FACE_PX, seed: int = 0) -> list[np.ndarray]:
    """`n_frames` BGR frames of one face, `face_px` high, drifting a few pixels around the
    centre on a plain grey background (confbot.media_synth, with the tests' sizes)."""
    return media_synth.compose_frames([face_bgr], n_frames=n_frames, width=width, height=height,
                                      face_px=face_px, seed=seed)


def face_video(path: Path, face_bgr: np.ndarray, *, seconds: float = VIDEO_SECONDS,
               fps: int = VIDEO_FPS, bitrate: int = 800_000) -> Path:
    """Encode a short 640x360 VP8 video of `face_bgr` to `path` (IVF) and return `path`.

    Nothing is done when `path` already exists, so a per-session cache directory makes the
    encoding happen once. Every second starts with a keyframe.
    """
    path = Path(path)
    if path.is_file() and path.stat().st_size > 0:
        return path
    frames = compose_frames(face_bgr, n_frames=max(1, round(seconds * fps)))
    return media_synth.encode_vp8(path, frames, fps=fps, bitrate=bitrate, keyframe_interval=fps)


# --------------------------------------------------------------------------- pytest fixtures


@pytest.fixture(scope="session")
def media_cache_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the test videos are kept: pytest's cache (kept between runs) or a temp dir."""
    cache = getattr(request.config, "cache", None)
    if cache is not None:
        return Path(cache.mkdir(f"confbot-face-videos-v{MEDIA_VERSION}"))
    return tmp_path_factory.mktemp("face-videos")


@pytest.fixture(scope="session")
def astronaut_video(media_cache_dir: Path) -> Path:
    """640x360 VP8 (IVF) of the astronaut's smiling face."""
    pytest.importorskip("skimage", reason="scikit-image supplies the astronaut photo")
    return face_video(media_cache_dir / "astronaut.ivf", astronaut_face_bgr())


@pytest.fixture(scope="session")
def fer2013_video(media_cache_dir: Path, analyzer: Any) -> Callable[[str], FaceVideo]:
    """A function: emotion name (e.g. "happy", "surprise") -> a `FaceVideo` of a PublicTest face
    with that label which the shipped model also recognises (see the module docstring).

    Skips, saying where it looked, when FER2013 is absent; an unknown emotion is a ValueError.
    """
    data = fer2013_publictest()
    if data is None:
        pytest.skip(f"FER2013 PublicTest not found in {fer2013_dir()} (set CONFBOT_FER2013_DIR)")
    images, labels, classes = data
    chosen: dict[str, FaceVideo] = {}

    def build(emotion: str) -> FaceVideo:
        if emotion not in classes:
            raise ValueError(f"emotion {emotion!r}: expected one of {', '.join(classes)}")
        if emotion not in chosen:
            chosen[emotion] = choose_fer2013_video(
                emotion, images=images, labels=labels, classes=classes, analyzer=analyzer,
                cache_dir=media_cache_dir,
            )
        return chosen[emotion]

    return build


# --------------------------------------------------------------------------- FER2013 faces


@dataclass(frozen=True, kw_only=True)
class FaceVideo:
    """A test video of one FER2013 face, and what the shipped model makes of it."""

    path: Path
    emotion: str  # the face's FER2013 label, and the shipped model's top emotion on every frame
    fer2013_index: int  # index in PublicTest
    min_probability: float  # the lowest probability of `emotion` over the checked frames
    model_sha256: str  # the model the check was made with


MIN_PROBABILITY = 0.7  # of the expected emotion, in every checked frame: a clear case
MAX_CANDIDATES = 80  # faces tried per emotion before giving up
CHECK_EVERY_FRAMES = 3


def fer2013_index_video(cache_dir: Path, images: np.ndarray, index: int) -> Path:
    """The 640x360 VP8 (IVF) video of PublicTest face `index`, encoded once into `cache_dir`."""
    return face_video(cache_dir / f"fer2013-publictest-{index}.ivf", fer2013_face_bgr(images, index))


def decode_bgr(path: Path) -> list[np.ndarray]:
    """Every frame of the video at `path`, as BGR arrays."""
    import av

    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="bgr24") for frame in container.decode(video=0)]


def recognised_probability(analyzer: Any, frames: list[np.ndarray], emotion: str) -> float | None:
    """The lowest probability of `emotion` over `frames` when the analyzer finds exactly one face
    in each and gives it `emotion` on top; else None."""
    label = analyzer.classifier.manifest.classes.index(emotion)
    lowest = 1.0
    for frame in frames:
        faces = analyzer.analyze_image(frame)
        if len(faces) != 1:
            return None
        scores = faces[0].scores
        if int(np.argmax(scores)) != label:
            return None
        lowest = min(lowest, float(scores[label]))
    return lowest


def choose_fer2013_video(
    emotion: str,
    *,
    images: np.ndarray,
    labels: np.ndarray,
    classes: list[str],
    analyzer: Any,
    cache_dir: Path,
    min_probability: float = MIN_PROBABILITY,
) -> FaceVideo:
    """The first PublicTest face labelled `emotion` whose encoded video the analyzer recognises
    (one face, `emotion` on top with at least `min_probability`, in every checked frame).

    The choice is cached in `cache_dir` per model sha256 and standardization; raises pytest's
    Failed when none of the first MAX_CANDIDATES faces passes.
    """
    manifest = analyzer.classifier.manifest
    sha256 = str(manifest.sha256)
    # The choice holds for one way of scoring: the model file and how faces are prepared for it.
    scoring = hashlib.sha256(f"{sha256}:{manifest.standardize}".encode()).hexdigest()
    choice_path = cache_dir / f"fer2013-choice-{emotion}-{scoring[:16]}.json"
    if choice_path.is_file():
        saved = json.loads(choice_path.read_text())
        path = fer2013_index_video(cache_dir, images, int(saved["index"]))
        return FaceVideo(path=path, emotion=emotion, fer2013_index=int(saved["index"]),
                         min_probability=float(saved["min_probability"]), model_sha256=sha256)
    label = classes.index(emotion)
    candidates = np.flatnonzero(labels == label)[:MAX_CANDIDATES]
    for index in (int(i) for i in candidates):
        # A cheap look at the raw frames first, then the real check on the encoded video.
        raw = compose_frames(fer2013_face_bgr(images, index), n_frames=3)
        if (recognised_probability(analyzer, raw, emotion) or 0.0) < min_probability:
            continue
        path = fer2013_index_video(cache_dir, images, index)
        lowest = recognised_probability(analyzer, decode_bgr(path)[::CHECK_EVERY_FRAMES], emotion)
        if lowest is None or lowest < min_probability:
            continue
        partial = choice_path.with_name(f"{choice_path.name}.{os.getpid()}.partial")
        partial.write_text(json.dumps({"index": index, "min_probability": lowest}))
        partial.replace(choice_path)
        return FaceVideo(path=path, emotion=emotion, fer2013_index=index, min_probability=lowest,
                         model_sha256=sha256)
    pytest.fail(
        f"none of the first {len(candidates)} PublicTest faces labelled {emotion!r} is recognised "
        f"as {emotion!r} (p >= {min_probability}) by the model {sha256[:12]}... in every frame"
    )
