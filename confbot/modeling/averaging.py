"""Averaged weights for training: the optimizer's moving average (EMA) and stochastic weight
averaging (SWA), kept apart from the training loop so each can be read and tested alone."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from confbot.errors import ConfigError, ModelError
from confbot.modeling.data import replace_file


@contextmanager
def averaged_weights(model: Any) -> Iterator[None]:
    """Inside the block, `model`'s trainable weights are its optimizer's moving averages.

    A no-op for an optimizer without `use_ema`. The weights the optimizer steps are put back
    on the way out, so training (and the checkpoint that `--resume` reads) goes on from them.
    """
    optimizer = model.optimizer
    if not getattr(optimizer, "use_ema", False):
        yield
        return
    # Keras keeps the averages in the order of the variables it was built with (its
    # SwapEMAWeights callback reads the same attribute).
    averages = optimizer._model_variables_moving_average
    variables = model.trainable_variables
    if len(averages) != len(variables):
        raise ModelError(f"the optimizer averages {len(averages)} variables, the model has "
                         f"{len(variables)}")
    current = [v.numpy() for v in variables]
    for var, avg in zip(variables, averages, strict=True):
        if avg is not None:
            var.assign(avg)
    try:
        yield
    finally:
        for var, value in zip(variables, current, strict=True):
            var.assign(value)


def fold_into_mean(mean: list[np.ndarray], weights: list[np.ndarray], n: int) -> list[np.ndarray]:
    """The equal-weight mean of `n` networks' weights (`mean`) with one more network's folded in.
    Floats only: integer variables (none in this network) are taken as they are."""
    return [m + (w - m) / (n + 1) if np.issubdtype(w.dtype, np.floating) else w
            for m, w in zip(mean, weights, strict=True)]


class WeightAverage:
    """Stochastic weight averaging (Izmailov et al., 2018) of a run's epochs.

    Each epoch's weights are folded into an equal-weight running average, which then sits in
    `backbone` (the run's float32 copy) with its batch norms re-estimated on `bn_faces`, since
    an average of weights has no statistics of its own. The count and the file holding the
    average are kept in the run's `state` (run.json): one file per count, `swa-N.weights.h5`,
    so the file run.json names stays whole until run.json names the next
    (`prune_averages`).
    """

    def __init__(self, backbone: Any, run_dir: Path, state: dict[str, Any],
                 bn_faces: np.ndarray, crop_size: int) -> None:
        self.backbone, self.run_dir, self.state = backbone, run_dir, state
        self.bn_faces, self.crop_size = bn_faces, crop_size
        self.mean: list[np.ndarray] = []
        if self.count:
            path = run_dir / str(state["swa_file"])
            if not path.exists():
                raise ConfigError(f"--resume: {path} is missing; the run's weight average "
                                  "cannot go on without it")
            backbone.load_weights(path)
            self.mean = backbone.get_weights()

    @property
    def count(self) -> int:
        return int(self.state.get("swa_count", 0))

    def add_and_load(self) -> None:
        """Fold the weights now in `backbone` into the average, save it, and leave the
        average in `backbone` with its batch norms re-estimated."""
        from confbot.modeling.recalibrate import recalibrate_bn

        weights, n = self.backbone.get_weights(), self.count
        self.mean = weights if n == 0 else fold_into_mean(self.mean, weights, n)
        self.state["swa_count"] = n + 1
        self.backbone.set_weights(self.mean)
        self.state["swa_file"] = f"swa-{n + 1}.weights.h5"
        replace_file(self.run_dir / self.state["swa_file"], self.backbone.save_weights)
        recalibrate_bn(self.backbone, self.bn_faces, self.crop_size)


def prune_averages(run_dir: Path, state: dict[str, Any]) -> None:
    """Delete the average files run.json (`state`) does not name; call after writing it.
    Whatever the run's settings: a run resumed without averaging leaves none behind."""
    for older in run_dir.glob("swa-*.weights.h5"):
        if older.name != state.get("swa_file"):
            older.unlink()
