#!/usr/bin/env python3
"""Measures how BlazeFace frames FER2013's faces, for `BlazeFaceDetector`'s `box_scale` and
`box_shift`: the raw box's side over the face's side and its centre's offset, as
`confbot model evaluate --detector` meets the faces (scaled up three times, in a frame
twice their size). Run it on Training, never on the test sets.

Usage: .venv/bin/python tools/detector-framing.py ../shared/datasets/fer2013/training.npz [N]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from confbot.modeling.data import load_face_set
from confbot.modeling.evaluate import find_faces
from confbot.vision import blazeface_model_bytes, default_blazeface_model
from face_core import BlazeFaceDetector


def main() -> None:
    data = load_face_set(Path(sys.argv[1]))
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
    pick = np.random.default_rng(0).choice(len(data.x), min(n, len(data.x)), replace=False)
    faces = data.x[pick]
    raw = BlazeFaceDetector(blazeface_model_bytes(default_blazeface_model()), box_scale=1.0, box_shift=0.0)
    located = find_faces(raw, faces)
    face_side = faces.shape[1] * located.upscale
    centre = face_side  # the face sits in the middle of a frame twice its side
    sides = located.sides(faces.shape[1])
    dy = np.array([(b.y + b.h / 2 - centre) / b.h for b in located.boxes])
    dx = np.array([(b.x + b.w / 2 - centre) / b.w for b in located.boxes])
    print(f"faces: {len(faces)} of {len(data.x)} (seed 0); found {len(located.found)}")
    for name, v in (("box side / face side", sides), ("centre x offset / box side", dx),
                    ("centre y offset / box side", dy)):
        p10, p50, p90 = np.percentile(v, [10, 50, 90])
        print(f"{name}: p10 {p10:.3f}, median {p50:.3f}, p90 {p90:.3f}")
    scale = 1 / float(np.median(sides))
    # The shift is in the scaled box's sides: the raw offset over the raw side, over the scale.
    shift = -float(np.median(dy)) / scale
    print(f"box_scale = {scale:.3f}, box_shift = {shift:.3f}")


if __name__ == "__main__":
    main()
