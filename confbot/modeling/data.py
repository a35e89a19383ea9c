"""Loading labelled face sets in the shared `.npz` format (arrays `x` and `y`), drawing samples
of them, and writing run files whole."""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from confbot.errors import DataError
from face_core.classify import standardize_faces
from face_core.emotions import EMOTIONS


@dataclass(frozen=True)
class FaceSet:
    """Faces as uint8 (N, H, W) grayscale, labels as int (N,) in `EMOTIONS` order."""

    x: np.ndarray
    y: np.ndarray
    sha256: str
    path: Path

    def __len__(self) -> int:
        return int(self.y.shape[0])


def sample_faces(x: np.ndarray, n: int, seed: int) -> np.ndarray:
    """`n` of the faces `x` (all, if there are no more), drawn without replacement with `seed`,
    in file order."""
    pick = np.random.default_rng(seed).choice(len(x), min(n, len(x)), replace=False)
    return x[np.sort(pick)]


def network_input(faces: np.ndarray, standardize: tuple[float, float] | None) -> np.ndarray:
    """uint8 (N, S, S) faces -> float (N, S, S, 1) as the classifier hands them to the network:
    moved to `standardize` (mean, sd) first, if given, and scaled to [0, 1]."""
    x = (standardize_faces(faces, *standardize) if standardize is not None
         else faces.astype(np.float32))
    return (x / 255.0)[..., None]


def face_statistics(x: np.ndarray, chunk: int = 4096) -> tuple[float, float]:
    """The mean grey level of faces `x` (N, H, W) and the mean of each face's own standard
    deviation, to a tenth of a level: a typical face's brightness and contrast, to which a
    manifest's `input.standardize` moves every face."""
    sums = np.zeros(2)
    for i in range(0, len(x), chunk):
        f = x[i:i + chunk].reshape(min(chunk, len(x) - i), -1).astype(np.float64)
        sums += f.mean(axis=1).sum(), f.std(axis=1).sum()
    mean, sd = sums / len(x)
    return round(float(mean), 1), round(float(sd), 1)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_face_set(path: Path) -> FaceSet:
    """Load and validate an `.npz` with `x` (N, H, W) uint8 and `y` (N,) labels 0..6."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            if "x" not in npz or "y" not in npz:
                raise DataError(f"{path}: expected arrays 'x' and 'y', found {sorted(npz.files)}")
            x = np.asarray(npz["x"])
            y = np.asarray(npz["y"])
            classes = [str(c) for c in npz["classes"]] if "classes" in npz else None
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from exc
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim != 3 or x.shape[0] == 0:
        raise DataError(f"{path}: 'x' must have shape (N, H, W) with N > 0, got {x.shape}")
    if y.shape != (x.shape[0],):
        raise DataError(f"{path}: 'y' must have shape ({x.shape[0]},), got {y.shape}")
    if x.dtype != np.uint8:
        raise DataError(f"{path}: 'x' must be uint8 pixels, got {x.dtype}")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= len(EMOTIONS):
        raise DataError(f"{path}: 'y' must hold integer labels 0..{len(EMOTIONS) - 1}")
    if classes is not None and tuple(classes) != EMOTIONS:
        raise DataError(f"{path}: class order {classes} differs from {list(EMOTIONS)}")
    return FaceSet(x=x, y=y.astype(np.int64), sha256=file_sha256(path), path=path)


def replace_file(path: Path, write: Callable[[Path], object]) -> None:
    """`write(tmp)` then rename over `path`: a run stopped mid-write (a budget's hard stop,
    a kill) leaves the previous file whole, and a write that fails leaves no temporary file.
    The temporary name keeps the suffix Keras wants."""
    tmp = path.with_name(f".{path.name.split('.')[0]}.tmp.{path.name.split('.', 1)[1]}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
