"""Precise batch norm: re-estimate every batch norm's statistics on the faces the product sees.

In training, each batch norm layer keeps running averages of the statistics of its batches:
augmented faces (rotated, zoomed, shifted, partly erased), averaged with momentum over the
last few hundred batches of a network that was still changing. The product classifies
centre-cropped faces and their mirrors, standardized to the training faces' brightness and
contrast. Re-estimating the statistics on exactly those, layer
by layer with the weights fixed, removes that mismatch without training (Wu and Johnson,
"Rethinking 'Batch' in BatchNorm", 2021, call this PreciseBN). The training faces are used, so
nothing is tuned on validation data.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from confbot.errors import ModelError
from confbot.modeling.averaging import fold_into_mean
from confbot.modeling.data import FaceSet, face_statistics, network_input, sample_faces

_CHUNK = 2048


def _check_share(low_res_prob: float) -> None:
    if not 0.0 <= low_res_prob <= 1.0:
        raise ModelError(f"low_res_prob must be from 0 to 1, got {low_res_prob}")


def bn_views(faces: np.ndarray, crop: int, *, low_res_prob: float = 0.0, seed: int = 1337,
             standardize: tuple[float, float] | None = None) -> np.ndarray:
    """uint8 (N, S, S) faces -> float (2N, crop, crop, 1): centre crops and their mirrors, the
    views the product classifies.

    A share `low_res_prob` of the faces (drawn with `seed`) is first shrunk to one of the
    sides training's `low_res_prob` uses, drawn alike, and scaled back, as
    `confbot model robustness`'s `small` condition does: the statistics then describe sharp
    and small faces in the mix the network was trained on, not sharp faces alone.
    `standardize` (mean, sd), as a manifest's `input.standardize`, moves each face to that
    brightness and contrast first, as the classifier does before the network sees it.
    """
    from confbot.modeling.architecture import LOW_RES_SIDES
    from confbot.modeling.conditions import KINDS, Condition

    _check_share(low_res_prob)
    if low_res_prob > 0:
        rng = np.random.default_rng(seed)
        shrink = rng.random(len(faces)) < low_res_prob
        side = rng.choice(np.asarray(LOW_RES_SIDES), len(faces))
        faces = faces.copy()
        for small in LOW_RES_SIDES:
            pick = shrink & (side == small)
            if pick.any():
                faces[pick] = Condition(KINDS["small"], float(small)).apply(faces[pick])
    off = (faces.shape[1] - crop) // 2
    x = network_input(faces, standardize)[:, off:off + crop, off:off + crop]
    return np.concatenate([x, x[:, :, ::-1]])


def recalibrate_bn(backbone: Any, faces: np.ndarray, crop_size: int, *,
                   low_res_prob: float = 0.0, seed: int = 1337,
                   standardize: tuple[float, float] | None = None) -> int:
    """Set each batch norm's moving mean and variance of `backbone` to the exact statistics of
    its input over `faces` (the views `bn_views` makes of them with these options), in layer
    order; returns the views used."""
    import keras

    x = bn_views(faces, crop_size, low_res_prob=low_res_prob, seed=seed, standardize=standardize)
    for layer in backbone.layers:
        if not isinstance(layer, keras.layers.BatchNormalization):
            continue
        features = keras.Model(backbone.input, layer.input)
        total: Any = 0.0
        total_sq: Any = 0.0
        count = 0
        for i in range(0, len(x), _CHUNK):
            f = np.asarray(features(x[i:i + _CHUNK], training=False), np.float64)
            f = f.reshape(-1, f.shape[-1])
            total = total + f.sum(axis=0)
            total_sq = total_sq + (f * f).sum(axis=0)
            count += len(f)
        gamma, beta, _, _ = layer.get_weights()
        mean = total / count
        var = np.maximum(total_sq / count - mean * mean, 0.0)
        layer.set_weights([gamma, beta, mean.astype(np.float32), var.astype(np.float32)])
    return len(x)


def recalibrate_export(manifest: Path, train_set: FaceSet, out_dir: Path, *,
                       name: str = "emotion_cnn", seed: int = 1337, faces: int = 0,
                       average_with: Sequence[Path] = (), low_res_prob: float = 0.0) -> Any:
    """Re-export the model of `manifest` with its batch norms recalibrated on `train_set`
    (all of it, or `faces` of its faces drawn with `seed`: the statistics of a few thousand
    faces are as good for a batch norm, and a wide network's pass over all takes minutes).

    The float32 weights beside the manifest are loaded (their sha256 checked), recalibrated
    and exported again with the same quantization (int8 calibrated on training faces drawn
    with `seed`, as `export_run` does); the manifest keeps its training record, adds
    `precise_bn`, and standardizes faces to `train_set`'s statistics, as `export_run`'s do.
    Returns the export's parity check.

    `average_with` names exports of the same network whose weights are averaged in, equally,
    before the recalibration (a "model soup", Wortsman et al. 2022: networks fine-tuned from
    one start often average into a better one at no cost at inference). Their averaged batch
    norm statistics would describe no network, which is why the recalibration follows. The
    manifest records every averaged weights file in `averaged`.
    """
    from confbot.modeling.export import CALIBRATION_FACES, export_litert, load_export

    loaded = load_export(manifest)
    meta, arch, backbone = loaded.meta, loaded.arch, loaded.backbone
    quantize = str(meta.get("quantization", "float32"))
    if train_set.x.shape[1] != arch.input_size:
        raise ModelError(f"{manifest}: the model takes {arch.input_size}px faces, the training "
                         f"faces are {train_set.x.shape[1]}px")
    if faces < 0:
        raise ModelError(f"faces must be 0 (all) or a positive number, got {faces}")
    _check_share(low_res_prob)
    averaged, mean = [loaded.weights_sha256], backbone.get_weights()
    for other_manifest in average_with:
        other = load_export(other_manifest)
        if other.arch != arch:
            raise ModelError(f"{other_manifest}: cannot average it with {manifest}: the "
                             f"networks differ ({other.arch} against {arch})")
        mean = fold_into_mean(mean, other.backbone.get_weights(), len(averaged))
        averaged.append(other.weights_sha256)
    backbone.set_weights(mean)
    use = sample_faces(train_set.x, faces, seed) if faces else train_set.x
    stats = face_statistics(train_set.x)
    n_views = recalibrate_bn(backbone, use, arch.crop_size, low_res_prob=low_res_prob,
                             seed=seed, standardize=stats)
    extra = {k: meta[k] for k in ("training",) if k in meta}
    extra["precise_bn"] = {"train_sha256": train_set.sha256, "views": n_views,
                           "standardized": True, "low_res_prob": low_res_prob}
    if average_with:
        # The statistics were re-estimated for the mean of these, not for the first alone.
        extra["averaged"] = {"weights_sha256": averaged}
    else:
        extra["precise_bn"]["from_weights_sha256"] = loaded.weights_sha256
    with tempfile.TemporaryDirectory() as tmp:
        recalibrated = Path(tmp) / "recalibrated.weights.h5"
        backbone.save_weights(recalibrated)
        return export_litert(recalibrated, arch, out_dir, name=name,
                             check_faces=train_set.x[:512], extra=extra, quantize=quantize,
                             calibration_faces=sample_faces(train_set.x, CALIBRATION_FACES, seed),
                             standardize=stats)
