"""Building face_core objects from settings: the file reading face_core leaves to us."""

from __future__ import annotations

import json
from pathlib import Path

from confbot.config import REPO_ROOT, Settings
from confbot.errors import ModelError
from face_core import (
    ArtifactError,
    EmotionClassifier,
    FaceAnalyzer,
    FaceDetector,
    HaarFaceDetector,
    ModelManifest,
    YuNetFaceDetector,
)


def load_classifier(manifest_path: Path, *, threads: int = 1,
                    tta: str = "none") -> EmotionClassifier:
    """The classifier described by the manifest at `manifest_path` (model file beside it)."""
    try:
        raw = json.loads(manifest_path.read_text())
    except FileNotFoundError as exc:
        raise ModelError(f"{manifest_path}: model manifest not found") from exc
    except (OSError, ValueError) as exc:
        raise ModelError(f"{manifest_path}: unreadable model manifest ({exc})") from exc
    try:
        manifest = ModelManifest.from_dict(raw)
        model_path = manifest_path.parent / manifest.file
        try:
            content = model_path.read_bytes()
        except OSError as exc:
            raise ModelError(f"{model_path}: model file not readable ({exc})") from exc
        return EmotionClassifier(content, manifest, threads=threads, tta=tta)
    except ArtifactError as exc:
        raise ModelError(str(exc)) from exc


def build_detector(settings: Settings) -> FaceDetector:
    cfg = settings.detector
    try:
        if cfg.kind == "yunet":
            return YuNetFaceDetector(Path(cfg.yunet_model), min_face_px=cfg.min_face_px)
        return HaarFaceDetector(min_face_px=cfg.min_face_px)
    except ArtifactError as exc:
        raise ModelError(str(exc)) from exc


def resolve_manifest(path: str) -> Path:
    """A relative manifest path is looked up from the working directory, then the repo."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    return REPO_ROOT / p


def build_analyzer(settings: Settings) -> FaceAnalyzer:
    classifier = load_classifier(resolve_manifest(settings.model.manifest), threads=settings.model.threads,
                                 tta=settings.model.tta)
    return FaceAnalyzer(detector=build_detector(settings), classifier=classifier,
                        smoothing=settings.pipeline.smoothing,
                        max_side_px=settings.detector.max_side_px,
                        full_detect_every=settings.detector.full_detect_every)
