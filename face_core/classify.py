"""The emotion classifier: a LiteRT (TFLite) model described by a manifest."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from face_core.emotions import EMOTIONS
from face_core.errors import ArtifactError


@dataclass(frozen=True, kw_only=True)
class ModelManifest:
    """What a model file expects and promises; stored beside it as JSON."""

    file: str
    sha256: str
    input_size: int
    color: str  # "gray"
    scale: float  # model input = pixel * scale + offset
    offset: float
    classes: tuple[str, ...]
    crop_margin: float  # how far the detector's box is grown before cropping

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ModelManifest:
        try:
            inp = raw["input"]
            manifest = cls(
                file=str(raw["file"]), sha256=str(raw["sha256"]).lower(),
                input_size=int(inp["size"]), color=str(inp["color"]),
                scale=float(inp["scale"]), offset=float(inp["offset"]),
                classes=tuple(raw["classes"]), crop_margin=float(raw.get("crop_margin", 0.0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"model manifest is missing or has a bad field: {exc}") from exc
        if manifest.classes != EMOTIONS:
            raise ArtifactError(f"model classes {manifest.classes} differ from {EMOTIONS}")
        if manifest.color != "gray":
            raise ArtifactError(f"model colour {manifest.color!r} is not supported (only 'gray')")
        return manifest


class EmotionClassifier:
    """Classifies batches of face crops into the 7 emotions.

    `flip_tta` also classifies each face's mirror image and averages the two, which the
    shipped model's measured accuracy includes when its card says so.
    """

    def __init__(self, model_content: bytes, manifest: ModelManifest, *, threads: int = 1,
                 flip_tta: bool = False) -> None:
        digest = hashlib.sha256(model_content).hexdigest()
        if digest != manifest.sha256:
            raise ArtifactError(
                f"{manifest.file}: sha256 {digest[:12]}... does not match the manifest's "
                f"{manifest.sha256[:12]}...; the model file is corrupt or was replaced"
            )
        from ai_edge_litert.interpreter import Interpreter

        try:
            self._interp = Interpreter(model_content=model_content, num_threads=threads)
        except (ValueError, RuntimeError) as exc:
            raise ArtifactError(f"{manifest.file}: not a loadable LiteRT model ({exc})") from exc
        self._input = self._interp.get_input_details()[0]["index"]
        self._output = self._interp.get_output_details()[0]["index"]
        self._batch = 0
        self.manifest = manifest
        self.flip_tta = flip_tta

    @property
    def input_size(self) -> int:
        return self.manifest.input_size

    def _run(self, x: np.ndarray) -> np.ndarray:
        if x.shape[0] != self._batch:
            self._interp.resize_tensor_input(self._input, list(x.shape), strict=False)
            self._interp.allocate_tensors()
            self._batch = x.shape[0]
        self._interp.set_tensor(self._input, x)
        self._interp.invoke()
        return np.array(self._interp.get_tensor(self._output), dtype=np.float32)

    def classify(self, faces: np.ndarray) -> np.ndarray:
        """(N, S, S) uint8 crops in, (N, 7) probabilities out (rows sum to 1)."""
        s = self.manifest.input_size
        if faces.ndim != 3 or faces.shape[1:] != (s, s):
            raise ValueError(f"expected (N, {s}, {s}) face crops, got {faces.shape}")
        if faces.shape[0] == 0:
            return np.zeros((0, len(EMOTIONS)), np.float32)
        x = (faces.astype(np.float32) * self.manifest.scale + self.manifest.offset)[..., None]
        if self.flip_tta:
            n = x.shape[0]
            both = self._run(np.concatenate([x, x[:, :, ::-1]], axis=0))
            probs = (both[:n] + both[n:]) / 2
        else:
            probs = self._run(np.ascontiguousarray(x))
        return probs / probs.sum(axis=1, keepdims=True)
