"""tools/tta-margins.py: accuracy and share of faces flipped at each `model.tta_margin`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np

from confbot.modeling.evaluate import classify_all
from confbot.vision import load_classifier
from tests.support.tools import run_tool

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "models" / "emotion_cnn.json"


def _run(*args: object) -> subprocess.CompletedProcess[str]:
    return run_tool("tta-margins.py", *args)


def test_each_margin_flips_the_unsure_faces_only(tmp_path: Path, publictest_path: Path) -> None:
    x = np.load(publictest_path)["x"][:200]
    # Labelled with what the shipped model says with every face flipped: that row scores 1.0,
    # and a margin scores the faces it leaves unflipped only where the first view agrees.
    first = classify_all(load_classifier(SHIPPED, tta="none"), x)
    y = classify_all(load_classifier(SHIPPED, tta="flip"), x).argmax(axis=1)
    top2 = np.sort(first, axis=1)[:, -2:]
    sure = top2[:, 1] - top2[:, 0] >= 0.5
    np.savez(tmp_path / "faces.npz", x=x, y=y.astype(np.uint8))

    res = _run(tmp_path / "faces.npz", SHIPPED, "--margins", "0.2,0.5")
    assert res.returncode == 0, res.stderr
    row = json.loads(res.stdout)
    assert row["every_face"] == 1.0
    assert row["none"] == round(float(np.mean(first.argmax(axis=1) == y)), 4) < 1.0
    half = row["margin_0.5"]
    assert half["flipped"] == round(1 - float(sure.mean()), 4)
    assert half["accuracy"] == round(1 - float(np.mean(sure & (first.argmax(axis=1) != y))), 4)
    assert half["changed"] == int(np.sum(sure & (first.argmax(axis=1) != y)))
    assert row["margin_0.2"]["flipped"] < half["flipped"]


def test_bad_arguments_are_refused_clearly(tmp_path: Path) -> None:
    np.savez(tmp_path / "faces.npz", x=np.zeros((4, 48, 48), np.uint8), y=np.zeros(4, np.uint8))
    res = _run(tmp_path / "faces.npz", tmp_path / "none.json")
    assert res.returncode == 2 and "model manifest not found" in res.stderr
    res = _run(tmp_path / "faces.npz", SHIPPED, "--margins", "1.5")
    assert res.returncode == 2 and "tta_margin must be in (0, 1]" in res.stderr
    res = _run(tmp_path / "faces.npz", SHIPPED, "--margins", "half")
    assert res.returncode != 0 and "separated by commas" in res.stderr
    assert "Traceback" not in res.stderr
    assert _run().returncode != 0
