"""tools/flip-views.py: each model's accuracy on the faces and on their mirror images."""

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
    return run_tool("flip-views.py", *args)


def test_the_mirrored_view_is_the_left_right_mirror_and_flip_is_the_products(
        tmp_path: Path, publictest_path: Path) -> None:
    x = np.load(publictest_path)["x"][:300]
    plain_model = load_classifier(SHIPPED, tta="none")
    # Real faces, labelled with what the shipped model says about each face's left-right mirror image:
    # the tool's mirrored view must score every one, its plain view only those it reads alike.
    y = classify_all(plain_model, np.ascontiguousarray(x[:, :, ::-1])).argmax(axis=1)
    plain = classify_all(plain_model, x).argmax(axis=1)
    flip = classify_all(load_classifier(SHIPPED, tta="flip"), x).argmax(axis=1)
    assert (plain != y).any(), "the faces should not all read the same mirrored"
    np.savez(tmp_path / "faces.npz", x=x, y=y.astype(np.uint8))

    res = _run(tmp_path / "faces.npz", SHIPPED)
    assert res.returncode == 0, res.stderr
    row = json.loads(res.stdout)
    assert row["mirrored"] == 1.0
    assert row["plain"] == round(float(np.mean(plain == y)), 4)
    assert row["agreement"] == row["plain"]
    assert row["views_mean"] == round((float(np.mean(plain == y)) + 1.0) / 2, 4)
    assert row["flip"] == round(float(np.mean(flip == y)), 4)


def test_a_missing_model_or_data_set_is_refused_clearly(tmp_path: Path) -> None:
    np.savez(tmp_path / "faces.npz", x=np.zeros((4, 48, 48), np.uint8), y=np.zeros(4, np.uint8))
    res = _run(tmp_path / "faces.npz", tmp_path / "none.json")
    assert res.returncode == 2 and "model manifest not found" in res.stderr
    res = _run(tmp_path / "absent.npz", SHIPPED)
    assert res.returncode == 2 and "no such file" in res.stderr
    assert "Traceback" not in res.stderr
    assert _run().returncode != 0
