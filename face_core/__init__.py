"""face_core: pure, synchronous vision for confbot. Numpy in, frozen dataclasses out."""

from face_core.analyzer import FaceAnalyzer, FaceStream
from face_core.blazeface import BlazeFaceDetector
from face_core.classify import TTA_VIEWS, EmotionClassifier, ModelManifest
from face_core.detect import FaceDetector, HaarFaceDetector, YuNetFaceDetector
from face_core.emotions import EMOTIONS, valence_arousal
from face_core.errors import ArtifactError, FaceCoreError, ImageError
from face_core.types import Box, Detection, FaceResult

__all__ = [
    "EMOTIONS", "TTA_VIEWS", "ArtifactError", "BlazeFaceDetector", "Box", "Detection", "EmotionClassifier",
    "FaceAnalyzer", "FaceCoreError", "FaceDetector", "FaceResult", "FaceStream",
    "HaarFaceDetector", "ImageError", "ModelManifest", "YuNetFaceDetector", "valence_arousal",
]
