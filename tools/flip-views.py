#!/usr/bin/env python3
"""Accuracy of each model on the faces as they are and on their mirror images, one JSON line a
model. A single view is a noisy measure: the two orientations of one network differ by up to
0.6 points on PublicTest, so a "gain without the flip" can be the luck of which orientation the
data set happens to hold. `views_mean` (the two single-view accuracies averaged) and `flip` (the
two views' scores averaged, the product's `model.tta = "flip"`) are the figures to compare.
`agreement` is the share of faces whose top emotion is the same in both views, and
`views_p_value` McNemar's test (as `confbot model compare`) of the one view against the other.

Usage: .venv/bin/python tools/flip-views.py ../shared/datasets/fer2013/publictest.npz MANIFEST...
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from confbot.errors import ConfbotError
from confbot.modeling.data import load_face_set
from confbot.modeling.evaluate import classify_all, compare_predictions
from confbot.vision import load_classifier


def flip_views(manifest: Path, x: np.ndarray, y: np.ndarray) -> dict[str, object]:
    classifier = load_classifier(manifest, tta="none")
    plain = classify_all(classifier, x).argmax(axis=1)
    mirrored = classify_all(classifier, np.ascontiguousarray(x[:, :, ::-1])).argmax(axis=1)
    # The flip on every face (`model.tta_margin = 1`), averaged by the classifier itself as
    # `confbot model evaluate --tta-margin 1` does; tools/tta-margins.py gives the product's
    # default, which flips only the faces the first view leaves unsure.
    flipped = classify_all(load_classifier(manifest, tta="flip"), x).argmax(axis=1)
    views = compare_predictions(plain, mirrored, y)
    return {
        "model": str(manifest),
        "plain": round(views.accuracy_a, 4),
        "mirrored": round(views.accuracy_b, 4),
        "views_mean": round((views.accuracy_a + views.accuracy_b) / 2, 4),
        "views_p_value": round(views.p_value, 4),  # McNemar: do the two orientations differ?
        "flip": round(float(np.mean(flipped == y)), 4),
        "agreement": round(float(np.mean(plain == mirrored)), 4),
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
