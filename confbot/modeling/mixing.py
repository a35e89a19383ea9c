"""Mixing pairs of training faces: mixup and CutMix, with their targets mixed alike.

Mixup (Zhang et al., "mixup: Beyond Empirical Risk Minimization", 2018) blends two faces;
CutMix (Yun et al., "CutMix: Regularization Strategy to Train Strong Classifiers with
Localizable Features", 2019) pastes a box of one face into another. Either way a face's
target, and its class weight, become the two faces' in the proportion of the mix. Mixing
happens on the batch, before the network's own augmentation layers, so a mixed face is
flipped, rotated, zoomed and cropped like any other.

Each batch is a pure function of (seed, epoch, batch index), so a resumed run sees the
faces it would have seen, whatever order Keras asks for the batches in.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

MIXINGS = ("none", "mixup", "cutmix")


def mix_batch(x: np.ndarray, y: np.ndarray, w: np.ndarray, rng: np.random.Generator, *,
              kind: str, prob: float, alpha: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mix a share `prob` of the faces of a batch each with another face of the batch.

    `x` is (B, H, W, C) floats, `y` (B, K) targets, `w` (B,) sample weights; the inputs are not
    changed. Each mixed face keeps a share `lam` of itself, drawn from Beta(alpha, alpha); for
    CutMix `lam` is the share of the face outside the pasted box, measured after the box is
    clipped to the face.
    """
    if kind not in MIXINGS:
        raise ValueError(f"mixing must be one of {MIXINGS}, got {kind!r}")
    src_x, src_y, src_w = x, y.astype(np.float32), w.astype(np.float32)
    x, y, w = x.copy(), src_y.copy(), src_w.copy()
    n = len(x)
    if kind == "none" or n < 2:
        return x, y, w
    # One cycle through the batch in random order: every face's partner is another face.
    order = rng.permutation(n)
    partner = np.empty(n, np.intp)
    partner[order] = np.roll(order, -1)
    mixed = rng.random(n) < prob
    lam = rng.beta(alpha, alpha, n).astype(np.float32)
    h, wd = x.shape[1], x.shape[2]
    for i in np.flatnonzero(mixed):
        j = partner[i]
        if kind == "mixup":
            x[i] = lam[i] * src_x[i] + (1 - lam[i]) * src_x[j]
        else:
            side = math.sqrt(1 - float(lam[i]))
            bh, bw = round(h * side), round(wd * side)
            cy, cx = int(rng.integers(h)), int(rng.integers(wd))
            top, bottom = max(cy - bh // 2, 0), min(cy + bh - bh // 2, h)
            left, right = max(cx - bw // 2, 0), min(cx + bw - bw // 2, wd)
            x[i, top:bottom, left:right] = src_x[j, top:bottom, left:right]
            lam[i] = 1 - (bottom - top) * (right - left) / (h * wd)
        y[i] = lam[i] * src_y[i] + (1 - lam[i]) * src_y[j]
        w[i] = lam[i] * src_w[i] + (1 - lam[i]) * src_w[j]
    return x, y, w


def mixed_batches(x: np.ndarray, y: np.ndarray, w: np.ndarray, *, batch_size: int, seed: int,
                  first_epoch: int, kind: str, prob: float, alpha: float) -> Any:
    """A `keras.utils.PyDataset` of shuffled, mixed (x, y, w) batches for `model.fit`.

    The faces are shuffled once an epoch by its `epoch` attribute, which starts at
    `first_epoch` (a resumed run's) and which the trainer sets as each epoch begins (Keras'
    own epoch hooks on a dataset are not called once an epoch on every backend: JAX's
    build step begins one more).
    """
    import keras

    class MixedBatches(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__()
            self.epoch = first_epoch

        def __len__(self) -> int:
            return math.ceil(len(x) / batch_size)

        def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            order = np.random.default_rng([seed, self.epoch]).permutation(len(x))
            pick = np.sort(order[index * batch_size:(index + 1) * batch_size])
            rng = np.random.default_rng([seed, self.epoch, index])
            return mix_batch(x[pick], y[pick], w[pick], rng, kind=kind, prob=prob, alpha=alpha)

    return MixedBatches()
