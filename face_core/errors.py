"""face_core's exceptions.

    FaceCoreError            root
    +-- ArtifactError        a model or detector file is missing, corrupt or inconsistent
    +-- ImageError           a frame is not an image face_core can use
"""

from __future__ import annotations


class FaceCoreError(Exception):
    """Root of face_core's errors."""


class ArtifactError(FaceCoreError):
    pass


class ImageError(FaceCoreError):
    pass
