"""Exporting trained weights to the runtime the product ships (LiteRT), with a manifest.

The export is checked: the LiteRT model must agree with the Keras model it came from.
Beside the model lies the float32 network it came from (`<name>.weights.h5`), so that a later
run can start from it (`init_weights`) instead of from random weights.

`quantize="int8"` writes a fully integer model (weights and activations int8, float input
and output, so nothing else changes), calibrated on faces from the training set. On CPUs
with AVX-512 VNNI, LiteRT's XNNPACK runs it about 5x faster than float32; on AVX2-only CPUs
the gain was about 1.2x. It agrees with the float model on about 98% of faces, so its
accuracy must be measured, not assumed (`confbot model evaluate`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from confbot.errors import ModelError
from confbot.modeling.architecture import (
    ArchitectureConfig,
    build_backbone,
    build_inference_model,
    dtype_policy,
)
from confbot.modeling.data import file_sha256, network_input, replace_file, sample_faces
from face_core.classify import ModelManifest
from face_core.emotions import EMOTIONS
from face_core.errors import ArtifactError

# Haar boxes are tighter than FER2013's framing; growing them by this share of their size
# on each side reproduces the training crops (measured by `confbot model calibrate-crop`).
DEFAULT_CROP_MARGIN = 0.0


@dataclass(frozen=True)
class ExportCheck:
    n: int
    top1_agreement: float
    max_abs_diff: float

    def __str__(self) -> str:
        return (f"top-1 agreement {self.top1_agreement:.4f}, max |diff| {self.max_abs_diff:.2e} "
                f"on {self.n} faces")


QUANTIZATIONS = ("float32", "int8")
CALIBRATION_FACES = 500
# What an export must agree with its Keras model on: (top-1 agreement, max |score diff|).
# Agreement counts the faces whose top score leads the next by at least DECIDED_MARGIN.
DECIDED_MARGIN = 0.02
_PARITY = {"float32": (0.99, 1e-3), "int8": (0.95, 0.5)}


@dataclass(frozen=True)
class LoadedExport:
    """An export's float32 network, rebuilt from its manifest."""

    meta: dict[str, Any]  # the manifest
    arch: ArchitectureConfig  # as the manifest records it
    backbone: Any  # the Keras backbone with the weights loaded (no dropout)
    weights_sha256: str


def load_export(manifest: Path) -> LoadedExport:
    """Rebuild the network an export manifest records and load the float32 weights beside it.

    The weights' sha256 is checked against the manifest. A manifest that cannot be read, weights
    that are missing, altered or do not fit the recorded architecture raise ModelError.
    """
    try:
        meta = json.loads(manifest.read_text())
        arch_meta, weights_meta = meta["architecture"], meta["weights"]
        arch = ArchitectureConfig(
            input_size=int(meta["input"]["size"]), crop_size=int(arch_meta["crop_size"]),
            widths=tuple(int(w) for w in arch_meta["widths"]),
            convs_per_stage=int(arch_meta["convs_per_stage"]),
            head_units=int(arch_meta["head_units"]), dropout=0.0)
        weights = manifest.parent / str(weights_meta["file"])
        digest = file_sha256(weights)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"{manifest}: not an export manifest with its float32 weights beside "
                         f"it ({type(exc).__name__}: {exc})") from exc
    if digest != weights_meta.get("sha256"):
        raise ModelError(f"{manifest}: {weights.name} does not match the sha256 the manifest "
                         "records")
    with dtype_policy(False):
        backbone = build_backbone(arch)
    try:
        backbone.load_weights(weights)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{manifest}: {weights.name} does not fit the architecture the "
                         f"manifest records ({exc})") from exc
    return LoadedExport(meta=meta, arch=arch, backbone=backbone, weights_sha256=digest)


def export_litert(weights: Path, arch: ArchitectureConfig, out_dir: Path, *,
                  name: str = "emotion_cnn", crop_margin: float = DEFAULT_CROP_MARGIN,
                  check_faces: np.ndarray | None = None, extra: dict | None = None,
                  quantize: str = "float32", calibration_faces: np.ndarray | None = None,
                  standardize: tuple[float, float] | None = None) -> ExportCheck:
    """Write `<name>.tflite` and `<name>.json` into `out_dir`; returns the parity check.

    `quantize="int8"` needs `calibration_faces` (uint8, (N, 48, 48)) to set activation ranges.
    `standardize` (mean, sd) goes into the manifest's input: the classifier moves each face
    to these grey-level statistics before the network sees it (`face_statistics`), so the
    int8 ranges are calibrated, and the parity checked, on faces moved the same way.
    """
    if quantize not in QUANTIZATIONS:
        raise ModelError(f"quantize must be one of {QUANTIZATIONS}, got {quantize!r}")
    if quantize == "int8" and (calibration_faces is None or len(calibration_faces) == 0):
        raise ModelError("an int8 export needs calibration faces")
    import tensorflow as tf

    # Dropout has no weights; a rate of 0 keeps random ops out of the exported graph.
    with dtype_policy(False):
        backbone = build_backbone(dataclasses.replace(arch, dropout=0.0))
        model = build_inference_model(backbone, arch)
    backbone.load_weights(weights)
    # from_keras_model, not Keras 3's SavedModel export: the latter traced a graph that
    # disagreed with the model (max |diff| 0.79 on random input) when this was written.
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantize == "int8":
        assert calibration_faces is not None
        calibration = network_input(calibration_faces, standardize)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([calibration[i:i + 1]]
                                                    for i in range(len(calibration)))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    tflite = converter.convert()
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / f"{name}.tflite"
    model_path.write_bytes(tflite)
    weights_path = out_dir / f"{name}.weights.h5"
    backbone.save_weights(weights_path)
    manifest = {
        "file": model_path.name,
        "sha256": hashlib.sha256(tflite).hexdigest(),
        "format": "litert",
        "input": {"size": arch.input_size, "color": "gray", "scale": 1 / 255, "offset": 0.0,
                  "layout": "NHWC", "dtype": "float32", **standardize_field(standardize)},
        "classes": list(EMOTIONS),
        "crop_margin": crop_margin,
        "quantization": quantize,
        "weights": {"file": weights_path.name, "sha256": file_sha256(weights_path)},
        "architecture": {"widths": list(arch.widths), "crop_size": arch.crop_size,
                         "convs_per_stage": arch.convs_per_stage, "head_units": arch.head_units},
        **(extra or {}),
    }
    (out_dir / f"{name}.json").write_text(json.dumps(manifest, indent=2) + "\n")

    if check_faces is None:
        check_faces = np.random.default_rng(0).integers(0, 256, (64, 48, 48), dtype=np.uint8)
    check = _parity(model, tflite, network_input(check_faces, standardize))
    min_agreement, max_diff = _PARITY[quantize]
    if check.top1_agreement < min_agreement or check.max_abs_diff > max_diff:
        raise ModelError(f"exported {quantize} model disagrees with the trained one: {check}")
    return check


def standardize_field(standardize: tuple[float, float] | None) -> dict[str, Any]:
    """The manifest's `input.standardize` entry for (mean, sd), or nothing for None."""
    if standardize is None:
        return {}
    return {"standardize": {"mean": standardize[0], "sd": standardize[1]}}


def set_standardize(manifest: Path, standardize: tuple[float, float] | None) -> dict[str, Any] | None:
    """Rewrite `manifest`'s `input.standardize` to (mean, sd), or remove it for None; returns
    the entry written. The model file is not touched. ModelError if the manifest is not one
    the classifier would load (before or after) or cannot be rewritten."""
    try:
        meta = json.loads(manifest.read_text())
        ModelManifest.from_dict(meta)
        inp = meta["input"]
        inp.pop("standardize", None)
        inp.update(standardize_field(standardize))
        ModelManifest.from_dict(meta)
    except (OSError, ValueError, ArtifactError) as exc:
        raise ModelError(f"{manifest}: not a model manifest ({type(exc).__name__}: {exc})") from exc
    try:
        replace_file(manifest, lambda tmp: tmp.write_text(json.dumps(meta, indent=2) + "\n"))
    except OSError as exc:
        raise ModelError(f"{manifest}: could not rewrite it ({exc})") from exc
    return inp.get("standardize")


def export_run(run_dir: Path, out_dir: Path, *, name: str = "emotion_cnn",
               quantize: str | None = None) -> ExportCheck:
    """Export the best weights of a `confbot model train` run, recording its provenance.

    `quantize` None takes the run's own `export_quantize` setting (float32 when it has none).
    Int8 calibration uses `CALIBRATION_FACES` training faces drawn with the run's seed. The
    manifest standardizes each face to the training faces' statistics (`face_statistics`).
    """
    from confbot.modeling.data import face_statistics, load_face_set
    from confbot.modeling.train import load_train_config

    state_path = run_dir / "run.json"
    weights = run_dir / "best.weights.h5"
    if not state_path.is_file() or not weights.is_file():
        raise ModelError(f"{run_dir}: not a training run (no run.json / best.weights.h5)")
    state = json.loads(state_path.read_text())
    cfg_raw = dict(state["config"])
    arch = cfg_raw.pop("arch")
    run_quantize = cfg_raw.pop("export_quantize", "float32")
    quantize = quantize or run_quantize
    cfg = load_train_config(None, {**cfg_raw, "arch": arch})
    val = load_face_set(Path(cfg.val_data))
    train_x = load_face_set(Path(cfg.train_data)).x
    calibration = None
    if quantize == "int8":
        calibration = sample_faces(train_x, CALIBRATION_FACES, cfg.seed)
    extra = {"training": {k: state[k] for k in (
        "command", "train_sha256", "val_sha256", "epochs_done", "best_epoch",
        "best_val_accuracy", "wall_seconds", "init_weights_sha256", "teacher") if k in state}}
    return export_litert(weights, cfg.arch, out_dir, name=name, check_faces=val.x[:512],
                         extra=extra, quantize=quantize, calibration_faces=calibration,
                         standardize=face_statistics(train_x))


def convert_keras_file(h5: Path, out_dir: Path, *, name: str, scale: float, offset: float,
                       extra: dict | None = None) -> ExportCheck:
    """Convert another project's Keras emotion model (7 FER2013 classes in our order, one
    gray channel) to LiteRT with a manifest, so it can be measured by the same code."""
    import keras
    import tensorflow as tf

    try:
        model = keras.models.load_model(h5, compile=False)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{h5}: not a loadable Keras model ({exc})") from exc
    shape = model.input_shape
    if len(shape) != 4 or shape[1] != shape[2] or shape[3] != 1 or model.output_shape[-1] != 7:
        raise ModelError(f"{h5}: expected (S, S, 1) input and 7 outputs, got {shape} -> "
                         f"{model.output_shape}")
    size = int(shape[1])
    tflite = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.tflite").write_bytes(tflite)
    manifest = {
        "file": f"{name}.tflite", "sha256": hashlib.sha256(tflite).hexdigest(),
        "format": "litert",
        "input": {"size": size, "color": "gray", "scale": scale, "offset": offset,
                  "layout": "NHWC", "dtype": "float32"},
        "classes": list(EMOTIONS), "crop_margin": 0.0, **(extra or {}),
    }
    (out_dir / f"{name}.json").write_text(json.dumps(manifest, indent=2) + "\n")
    x = np.random.default_rng(0).random((16, size, size, 1)).astype(np.float32) * 2 - 1
    return _parity(model, tflite, x)


def _parity(model: Any, tflite: bytes, x: np.ndarray) -> ExportCheck:
    """Run `x` through the Keras model and its LiteRT export; how far apart are they?"""
    from ai_edge_litert.interpreter import Interpreter

    ref = model(x, training=False).numpy()
    interp = Interpreter(model_content=tflite, num_threads=2)
    inp = interp.get_input_details()[0]["index"]
    interp.resize_tensor_input(inp, list(x.shape), strict=False)
    interp.allocate_tensors()
    interp.set_tensor(inp, x)
    interp.invoke()
    got = interp.get_tensor(interp.get_output_details()[0]["index"])
    # Top-1 is compared only where the trained model decides: an int8 softmax has steps of
    # 1/256, so two scores closer than a few steps may tie or swap without meaning anything.
    top2 = np.sort(ref, axis=1)[:, -2:]
    decided = (top2[:, 1] - top2[:, 0]) >= DECIDED_MARGIN
    same = ref.argmax(1) == got.argmax(1)
    agreement = float(same[decided].mean()) if decided.any() else 1.0
    return ExportCheck(n=len(x), top1_agreement=agreement, max_abs_diff=float(np.abs(ref - got).max()))
