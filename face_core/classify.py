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
    quantization: str = "float32"  # "int8": full-integer, fast only with an 8-bit dot product
    # Each face's grey levels moved to this (mean, standard deviation) before `scale` and
    # `offset`, or None: makes the scores blind to the face's brightness and contrast.
    standardize: tuple[float, float] | None = None

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ModelManifest:
        try:
            inp = raw["input"]
            manifest = cls(
                file=str(raw["file"]), sha256=str(raw["sha256"]).lower(),
                input_size=int(inp["size"]), color=str(inp["color"]),
                scale=float(inp["scale"]), offset=float(inp["offset"]),
                classes=tuple(raw["classes"]), crop_margin=float(raw.get("crop_margin", 0.0)),
                quantization=str(raw.get("quantization", "float32")),
                standardize=_standardize_field(inp.get("standardize")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"model manifest is missing or has a bad field: {exc}") from exc
        if manifest.classes != EMOTIONS:
            raise ArtifactError(f"model classes {manifest.classes} differ from {EMOTIONS}")
        if manifest.color != "gray":
            raise ArtifactError(f"model colour {manifest.color!r} is not supported (only 'gray')")
        return manifest


def _standardize_field(raw: Any) -> tuple[float, float] | None:
    if raw is None:
        return None
    mean, sd = float(raw["mean"]), float(raw["sd"])
    if not (0 <= mean <= 255 and 0 < sd <= 255):
        raise ValueError(f"input.standardize wants a mean in [0, 255] and an sd in (0, 255], "
                         f"got {raw!r}")
    return mean, sd


# Below this spread (grey levels) a face is taken as flat: it is moved to the mean but not
# stretched, which would only magnify its noise.
MIN_FACE_SD = 2.0


def standardize_faces(faces: np.ndarray, mean: float, sd: float) -> np.ndarray:
    """(N, S, S) faces as float32 grey levels, each shifted and scaled to `mean` and `sd` over
    its own pixels, and kept within [0, 255]."""
    x = faces.astype(np.float32)
    own_mean = x.mean(axis=(1, 2), keepdims=True)
    own_sd = x.std(axis=(1, 2), keepdims=True)
    gain = np.where(own_sd >= MIN_FACE_SD, sd / np.maximum(own_sd, MIN_FACE_SD), 1.0)
    return np.clip((x - own_mean) * gain + mean, 0.0, 255.0)


# Test-time augmentation: each face is classified in several views, whose scores are averaged.
# A view is (dx, dy, mirror), shifts in 48ths of the face's side. "ten-crop" is the centre and
# four diagonal shifts of 2/48, each also mirrored: with the shipped model's built-in 40/48
# centre crop, ten 40x40 crops of the face. It costs ten inferences per face.
View = tuple[int, int, bool]
TTA_VIEWS: dict[str, tuple[View, ...]] = {
    "none": ((0, 0, False),),
    "flip": ((0, 0, False), (0, 0, True)),
    "ten-crop": tuple((dx, dy, m) for m in (False, True)
                      for dx, dy in ((0, 0), (-2, -2), (2, -2), (-2, 2), (2, 2))),
}


def _view(x: np.ndarray, view: View) -> np.ndarray:
    """`x` (N, S, S, 1) shifted by (dx, dy) 48ths of S, edges replicated, and maybe mirrored."""
    dx, dy, mirror = view
    s = x.shape[1]
    px, py = round(dx * s / 48), round(dy * s / 48)
    if px or py:
        pad = max(abs(px), abs(py))
        padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
        x = padded[:, pad + py:pad + py + s, pad + px:pad + px + s]
    return x[:, :, ::-1] if mirror else x


class EmotionClassifier:
    """Classifies batches of face crops into the 7 emotions.

    `tta` names the views each face is classified in (`TTA_VIEWS`); their scores are averaged.
    With `tta_margin` below 1, only the faces the first view leaves unsure (its two best scores
    closer than `tta_margin`) are classified in the other views too; the rest keep the first
    view's scores. On most faces the other views would not change the answer, and they cost
    most of the time. The shipped model's card says which settings its measured accuracy used.
    """

    def __init__(self, model_content: bytes, manifest: ModelManifest, *, threads: int = 1,
                 tta: str = "none", tta_margin: float = 1.0) -> None:
        if tta not in TTA_VIEWS:
            raise ValueError(f"tta must be one of {sorted(TTA_VIEWS)}, got {tta!r}")
        if not 0 < tta_margin <= 1:
            raise ValueError(f"tta_margin must be in (0, 1], got {tta_margin!r}")
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
        self.tta = tta
        self.tta_margin = tta_margin
        self._views = TTA_VIEWS[tta]
        self.faces_classified = 0
        self.faces_in_all_views = 0  # of those, the ones classified in every view of `tta`

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
        pixels = (faces.astype(np.float32) if self.manifest.standardize is None
                  else standardize_faces(faces, *self.manifest.standardize))
        x = (pixels * self.manifest.scale + self.manifest.offset)[..., None]
        first = self._run(np.ascontiguousarray(_view(x, self._views[0])))
        self.faces_classified += len(x)
        if len(self._views) == 1:
            self.faces_in_all_views += len(x)
            return first / first.sum(axis=1, keepdims=True)
        if self.tta_margin >= 1:
            unsure = np.arange(len(x))
        else:
            top2 = np.partition(first, -2, axis=1)[:, -2:]
            unsure = np.flatnonzero(top2[:, 1] - top2[:, 0] < self.tta_margin)
        probs = first.copy()
        if len(unsure):
            rest = self._views[1:]
            others = self._run(np.concatenate([_view(x[unsure], v) for v in rest], axis=0))
            others = others.reshape(len(rest), len(unsure), -1)
            probs[unsure] = (first[unsure] + others.sum(axis=0)) / len(self._views)
            self.faces_in_all_views += len(unsure)
        return probs / probs.sum(axis=1, keepdims=True)
