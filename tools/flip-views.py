#!/usr/bin/env python3
"""Accuracy of each model on the faces as they are and on their mirror images, one JSON line a
model. A single view is a noisy measure: the two orientations of one network differ by up to
0.6 points on PublicTest, so a "gain without the flip" can be the luck of which orientation the
data set happens to hold. `views_mean` (the two single-view accuracies averaged) and `flip` (the
two views' scores averaged, the product's `model.tta = "flip"`) are the figures to compare.
`agreement` is the share of faces whose top emotion is the same in both views.

Usage: .venv/bin/python tools/flip-views.py ../shared/datasets/fer2013/publictest.npz MANIFEST...
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from confbot.errors import ConfbotError
from confbot.modeling.data import load_face_set
from confbot.modeling.evaluate import classify_all
from confbot.vision import load_classifier


def flip_views(manifest: Path, x: np.ndarray, y: np.ndarray) -> dict[str, object]:
    classifier = load_classifier(manifest, tta="none")
    plain = classify_all(classifier, x)
    mirrored = classify_all(classifier, np.ascontiguousarray(x[:, :, ::-1]))
    # The flip as `confbot model evaluate` and `compare` run it, both views in one batch: the
    # int8 kernels' scores move in the third decimal with the batch size, so summing the two
    # runs above could differ from their figure by a face or two.
    flipped = classify_all(load_classifier(manifest, tta="flip"), x)

    def accuracy(p: np.ndarray) -> float:
        return float(np.mean(p.argmax(axis=1) == y))

    return {
        "model": str(manifest),
        "plain": round(accuracy(plain), 4),
        "mirrored": round(accuracy(mirrored), 4),
        "views_mean": round((accuracy(plain) + accuracy(mirrored)) / 2, 4),
        "flip": round(accuracy(flipped), 4),
        "agreement": round(float(np.mean(plain.argmax(axis=1) == mirrored.argmax(axis=1))), 4),
    }


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    try:
        data = load_face_set(Path(sys.argv[1]))
        for manifest in sys.argv[2:]:
            print(json.dumps(flip_views(Path(manifest), data.x, data.y)), flush=True)
    except ConfbotError as exc:
        print(f"flip-views: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
