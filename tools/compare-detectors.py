#!/usr/bin/env python3
"""Two face detectors, one model: which faces each finds, and McNemar's exact test of the
model's answers on the faces both find, each framed by its own detector's box (as in
`confbot model evaluate --detector`). Prints one JSON object.

Usage: .venv/bin/python tools/compare-detectors.py PUBLICTEST.npz [KIND_A] [KIND_B]
       (kinds as in detector.kind; default blazeface and haar; the configured model and TTA)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from confbot.config import DetectorConfig, Settings
from confbot.modeling.data import load_face_set
from confbot.modeling.evaluate import classify_all, compare_predictions, find_faces
from confbot.vision import build_detector, configured_classifier


def main() -> None:
    data = load_face_set(Path(sys.argv[1]))
    kinds = (sys.argv[2:4] + ["blazeface", "haar"][len(sys.argv[2:4]):])[:2]
    settings = Settings()
    classifier = configured_classifier(settings.model)
    labels: list[dict[int, int]] = []  # per detector: face index -> the model's answer
    for kind in kinds:
        located = find_faces(build_detector(Settings(detector=DetectorConfig(kind=kind))), data.x)
        crops = located.crops(data.x, size=classifier.input_size,
                              margin=classifier.manifest.crop_margin)
        pred = classify_all(classifier, crops).argmax(1)
        labels.append(dict(zip(located.found.tolist(), pred.tolist(), strict=True)))
    right = [{i: label == data.y[i] for i, label in found.items()} for found in labels]
    both = sorted(set(labels[0]) & set(labels[1]))
    only = [sorted(set(found) - set(both)) for found in labels]
    y = data.y[both]
    pred_a, pred_b = (np.array([found[i] for i in both]) for found in labels)
    paired = compare_predictions(pred_a, pred_b, y) if both else None
    dataset = classify_all(classifier, data.x[both]).argmax(1) == y if both else np.zeros(0)
    print(json.dumps({
        "data": str(data.path), "n": len(data.x), "detector_a": kinds[0], "detector_b": kinds[1],
        "found_a": len(right[0]), "found_b": len(right[1]), "found_both": len(both),
        "only_a": len(only[0]), "only_b": len(only[1]),
        "accuracy_only_a": round(float(np.mean([right[0][i] for i in only[0]])), 4) if only[0] else None,
        "accuracy_only_b": round(float(np.mean([right[1][i] for i in only[1]])), 4) if only[1] else None,
        "accuracy_both_dataset_framing": round(float(np.mean(dataset)), 4) if both else None,
        "paired_on_both": paired.as_dict() if paired else None,
    }))


if __name__ == "__main__":
    main()
