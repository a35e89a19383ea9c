"""Shared fixtures: the shipped model, a real face photo, and the FER2013 data if present."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def fer2013_dir() -> Path:
    return Path(os.environ.get("CONFBOT_FER2013_DIR", REPO.parent / "shared/datasets/fer2013"))


@pytest.fixture(scope="session")
def publictest_path() -> Path:
    path = fer2013_dir() / "publictest.npz"
    if not path.is_file():
        pytest.skip(f"FER2013 PublicTest not found at {path} (set CONFBOT_FER2013_DIR)")
    return path


@pytest.fixture(scope="session")
def face_photo_bgr() -> np.ndarray:
    """A real photograph of a smiling person (NASA portrait shipped by scikit-image)."""
    data = pytest.importorskip("skimage.data", reason="scikit-image supplies the test photo")
    import cv2

    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


@pytest.fixture(scope="session")
def face_photo_path(face_photo_bgr: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import cv2

    path = tmp_path_factory.mktemp("photos") / "astronaut.png"
    cv2.imwrite(str(path), face_photo_bgr)
    return path


@pytest.fixture(scope="session")
def analyzer():  # type: ignore[no-untyped-def]
    from confbot.config import Settings
    from confbot.vision import build_analyzer

    return build_analyzer(Settings())
