#!/usr/bin/env python3
"""What `model.tta_margin` costs and saves: for each model, the accuracy with the flip on every
face, and with the flip only on the faces whose two best first-view scores are closer than each
margin, with the share of faces flipped (which sets the cost: a flipped face costs two
inferences, the rest one) and the number of faces whose top emotion differs from the one with
every face flipped. One JSON line a model; `none` is the first view alone.

Usage: .venv/bin/python tools/tta-margins.py DATA.npz MANIFEST... [--margins 0.4,0.5]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from confbot.errors import ConfbotError
from confbot.modeling.data import load_face_set
from confbot.modeling.evaluate import classify_all
from confbot.vision import load_classifier

DEFAULT_MARGINS = (0.3, 0.4, 0.5, 0.6, 0.7)


def tta_margins(manifest: Path, x: np.ndarray, y: np.ndarray,
                margins: tuple[float, ...]) -> dict[str, object]:
    def predict(tta: str, margin: float = 1.0) -> tuple[np.ndarray, float]:
        classifier = load_classifier(manifest, tta=tta, tta_margin=margin)
        labels = classify_all(classifier, x).argmax(axis=1)
        return labels, round(classifier.faces_in_all_views / len(x), 4)

    def accuracy(labels: np.ndarray) -> float:
        return round(float(np.mean(labels == y)), 4)

    every, _ = predict("flip")
    row: dict[str, object] = {"model": str(manifest), "none": accuracy(predict("none")[0]),
                              "every_face": accuracy(every)}
    for margin in margins:
        labels, share = predict("flip", margin)
        row[f"margin_{margin:g}"] = {"accuracy": accuracy(labels), "flipped": share,
                                     "changed": int(np.sum(labels != every))}
    return row


def _margins(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(m) for m in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: numbers separated by commas, e.g. 0.4,0.5") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="faces (.npz with x and y)")
    parser.add_argument("manifests", type=Path, nargs="+", help="model manifests")
    parser.add_argument("--margins", type=_margins, default=DEFAULT_MARGINS,
                        help="margins to try, separated by commas (default: 0.3,...,0.7)")
    args = parser.parse_args()
    try:
        data = load_face_set(args.data)
        for manifest in args.manifests:
            print(json.dumps(tta_margins(manifest, data.x, data.y, args.margins)), flush=True)
    except (ConfbotError, ValueError) as exc:  # ValueError: a margin outside (0, 1]
        print(f"tta-margins: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
