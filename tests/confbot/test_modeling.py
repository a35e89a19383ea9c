"""`confbot model train/export`: config, schedule, data checks, and small real training runs.

The runs use a tiny network on a synthetic data set (each class a bright square in its own
place) so that a whole train, resume, budget stop and export takes seconds.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from confbot.errors import ConfigError, DataError, ModelError
from confbot.modeling.architecture import ArchitectureConfig
from confbot.modeling.data import face_statistics, load_face_set
from confbot.modeling.train import (
    HISTORY_FIELDS,
    LR_EVERY_JAX,
    TrainConfig,
    class_weights,
    distill_targets,
    fitted_epochs,
    load_train_config,
    lr_at,
)
from face_core.classify import standardize_faces

REPO = Path(__file__).resolve().parents[2]


def _synthetic(path: Path, n: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 7
    x = rng.integers(0, 60, (n, 48, 48), dtype=np.uint8)
    for i, label in enumerate(y):
        r, c = divmod(int(label), 3)
        x[i, 4 + r * 14 : 14 + r * 14, 4 + c * 14 : 14 + c * 14] = 230
    np.savez(path, x=x, y=y)
    return path


def _tiny_config(tmp_path: Path, **overrides: object) -> TrainConfig:
    train = _synthetic(tmp_path / "train.npz", 224, seed=1)
    val = _synthetic(tmp_path / "val.npz", 70, seed=2)
    return load_train_config(None, {
        "train_data": str(train), "val_data": str(val), "epochs": 2, "warmup_epochs": 1,
        "batch_size": 32, "mixed_bfloat16": False, "erase_prob": 0.5,
        "arch": {"widths": [4, 8], "convs_per_stage": 1, "head_units": 8, "crop_size": 40},
        **overrides,
    })


def _history(run: Path) -> list[dict[str, str]]:
    with (run / "history.csv").open() as fh:
        return list(csv.DictReader(fh))


# --- config, schedule, class weights -------------------------------------------------------

@pytest.mark.parametrize("recipe", ["training.toml", "training-lite.toml", "training-micro.toml",
                                    "training-gpu.toml"])
def test_the_shipped_training_recipes_parse(recipe: str) -> None:
    cfg = load_train_config(REPO / recipe)
    assert cfg.epochs >= 1 and cfg.arch.crop_size <= cfg.arch.input_size
    assert cfg.train_data.endswith("training.npz") and cfg.val_data.endswith("publictest.npz")


@pytest.mark.parametrize("recipe, manifest", [("training.toml", "emotion_cnn.json"),
                                              ("training-lite.toml", "emotion_cnn_lite.json"),
                                              ("training-micro.toml", "emotion_cnn_micro.json")])
def test_each_shipped_model_has_the_shape_of_its_recipe(recipe: str, manifest: str) -> None:
    arch = load_train_config(REPO / recipe).arch
    shipped = json.loads((REPO / "models" / manifest).read_text())["architecture"]
    assert shipped == {"widths": list(arch.widths), "crop_size": arch.crop_size,
                       "convs_per_stage": arch.convs_per_stage, "head_units": arch.head_units}


@pytest.mark.parametrize("text, message", [
    ("epochs = 3\nlearning_rate = 0.1\n", "unknown training settings"),
    ("[arch]\ndepth = 3\n", r"unknown \[arch\] settings"),
    ("epochs = 0\n", "must be positive"),
    ("epochs = [\n", "cannot read training config"),
    ('export_quantize = "int4"\n', "export_quantize must be"),
    ('teacher_tta = "all"\n', "teacher_tta must be one of"),
    ("teacher = 5\n", "teacher must be a path or a list of paths"),
    ('teacher = ["a.json", 5]\n', "teacher must be a path or a list of paths"),
    ("distill_weight = 1.5\n", r"distill_weight must be in \[0, 1\], got 1.5"),
    ("distill_temperature = 0\n", "distill_temperature must be positive, got 0"),
    ("[arch]\ncrop_size = 50\n", "crop_size must be between 8 and input_size"),
    ("[arch]\ncrop_size = 4\n", "crop_size must be between 8 and input_size"),
    ("[arch]\ncrop_size = 41\n", "input_size - crop_size must be even, got 48 - 41"),
    ("shift_pixels = -1\n", "shift_pixels must be between 0 and 23"),
    ("shift_pixels = 24\n", "shift_pixels must be between 0 and 23"),
    ("shift_pixels = 2.5\n", "shift_pixels must be a whole number"),
    ("ema_momentum = 1.0\n", r"ema_momentum must be in \[0, 1\)"),
    ("ema_momentum = -0.1\n", r"ema_momentum must be in \[0, 1\)"),
    ("zoom_in = 1.0\n", r"zoom_in must be a share in \[0, 1\)"),
    ("zoom_out = -0.1\n", r"zoom_out must be a share in \[0, 1\)"),
    ("low_res_prob = 1.5\n", r"low_res_prob must be in \[0, 1\], got 1.5"),
    ('zoom_out = "0.1"\n', "zoom_out must be a number"),
    ('export_at_end = "no"\n', "export_at_end must be true or false"),
    ("fit_schedule_to_budget = 1\n", "fit_schedule_to_budget must be true or false"),
    ("fit_schedule_to_budget = true\n", "fit_schedule_to_budget needs a budget"),
    ('epochs = "5"\n', "epochs must be a whole number"),
    ("batch_size = 1.5\n", "batch_size must be a whole number"),
    ('peak_lr = "1e-3"\n', "peak_lr must be a number"),
    ("train_data = 3\n", "train_data must be a string"),
    ("[arch]\nwidths = []\n", "widths must be a non-empty list of positive whole numbers"),
    ("[arch]\nwidths = 64\n", "widths must be a non-empty list of positive whole numbers"),
    ("[arch]\nwidths = [32, 0]\n", "widths must be a non-empty list of positive whole numbers"),
    ("epochs = 10\nswa_start = 11\nswa_lr = 1e-4\n", "swa_start must be an epoch from 1 to epochs"),
    ("swa_start = -1\n", "swa_start must be an epoch from 1 to epochs"),
    ("swa_start = 5\n", "needs swa_lr and swa_bn_faces above 0"),
    ("swa_start = 5\nswa_lr = 1e-4\nswa_bn_faces = 0\n", "needs swa_lr and swa_bn_faces above 0"),
    ("swa_start = 5\nswa_lr = 1e-4\nema_momentum = 0.99\n", "set one of them to 0"),
    ("warmup_epochs = 3\nswa_start = 3\nswa_lr = 1e-4\n", "after the warm-up"),
    ("peak_lr = 1e-3\nswa_start = 5\nswa_lr = 2e-3\n", "at most peak_lr"),
    ("swa_start = 5\nswa_lr = 1e-4\nbudget_minutes = 9\nfit_schedule_to_budget = true\n",
     "cannot go with fit_schedule_to_budget"),
    ('mixing = "cutout"\n', "mixing must be one of"),
    ('optimizer = "adam"\n', "optimizer must be one of"),
    ("momentum = 1.0\n", r"momentum must be in \[0, 1\), got 1.0"),
    ("weight_decay = -1e-4\n", "weight_decay must be zero or positive, got -0.0001"),
    ("mix_prob = 1.5\n", r"mix_prob must be in \[0, 1\], got 1.5"),
    ("mix_alpha = 0\n", "mix_alpha must be positive, got 0"),
    ("epochs = 0\n", "epochs must be positive, got 0"),
    ("peak_lr = -1e-3\n", "peak_lr must be positive"),
    ('export_quantize = "int4"\n', r"export_quantize must be one of \['float32', 'int8'\], got 'int4'"),
    ('teacher_tta = "all"\n', "teacher_tta must be one of"),
    ("init_noise = -1\n", "init_noise must be zero or positive"),
    ('mixed_bfloat16 = "yes"\n', 'mixed_bfloat16 must be true, false or "auto", got \'yes\''),
    ('distill_mode = "online"\n', "distill_mode must be one of"),
    ('distill_mode = "consistent"\n', "needs a teacher and a distill_weight above 0"),
    ('distill_mode = "consistent"\nteacher = "t.json"\ndistill_weight = 0\n',
     "needs a teacher and a distill_weight above 0"),
    ('distill_mode = "consistent"\nteacher = ["t.json", "scores.npz"]\n',
     r"must be an export manifest \(.json\), not \['scores.npz'\]"),
    ("mixed_bfloat16 = 1\n", 'mixed_bfloat16 must be true, false or "auto", got 1'),
])
def test_a_wrong_training_config_is_refused_clearly(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_train_config(path)


def test_mixed_bfloat16_auto_follows_the_cpu_and_a_resumed_run(
        capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    from confbot.hardware import parse_cpuinfo
    from confbot.modeling.train import resolve_bf16

    avx2 = parse_cpuinfo("model name : EPYC\nflags : avx2 fma\n")
    amx = parse_cpuinfo("model name : Xeon\nflags : avx2 fma avx512f avx512_bf16 amx_bf16\n")
    unknown = parse_cpuinfo("")
    auto = load_train_config(None, {"mixed_bfloat16": "auto"})
    assert auto.mixed_bfloat16 is None and load_train_config(None).mixed_bfloat16 is None
    assert load_train_config(REPO / "training.toml").mixed_bfloat16 is None
    assert load_train_config(REPO / "training-gpu.toml").mixed_bfloat16 is True
    assert resolve_bf16(auto, avx2).mixed_bfloat16 is False
    assert "training in float32 (this CPU has no bf16 arithmetic: EPYC (avx2 fma))" in \
        capsys.readouterr().out
    assert resolve_bf16(auto, amx).mixed_bfloat16 is True
    assert resolve_bf16(auto, unknown).mixed_bfloat16 is False
    # A resumed run goes on as it started, whatever this CPU would pick for a new one.
    assert resolve_bf16(auto, avx2, started_with=True).mixed_bfloat16 is True
    assert resolve_bf16(auto, amx, started_with=False).mixed_bfloat16 is False
    assert "as the run started" in capsys.readouterr().out
    # An explicit choice stands; bf16 on a CPU without it is warned about unless a GPU trains.
    explicit = load_train_config(None, {"mixed_bfloat16": True})
    caplog.clear()
    assert resolve_bf16(explicit, avx2).mixed_bfloat16 is True
    assert "bfloat16 is emulated here" in caplog.text
    caplog.clear()
    assert resolve_bf16(explicit, avx2, gpu=True).mixed_bfloat16 is True
    assert resolve_bf16(explicit, amx).mixed_bfloat16 is True
    assert resolve_bf16(dataclasses.replace(explicit, mixed_bfloat16=False), amx).mixed_bfloat16 is False
    assert caplog.text == "" and capsys.readouterr().out == ""


def test_set_overrides_any_setting_including_the_architecture(tmp_path: Path) -> None:
    from confbot.modeling.train import parse_overrides

    assert parse_overrides(["teacher="]) == parse_overrides(['teacher=""']) == {"teacher": ""}
    overrides = parse_overrides(["arch.widths=[48, 96]", 'teacher=""', "epochs = 7",
                                 "fit_schedule_to_budget=true"])
    cfg = load_train_config(REPO / "training.toml", overrides)
    assert cfg.arch.widths == (48, 96) and cfg.teacher == "" and cfg.epochs == 7
    assert cfg.fit_schedule_to_budget is True
    assert cfg.arch.head_units == load_train_config(REPO / "training.toml").arch.head_units
    for bad, message in [("widths", "expected KEY=VALUE"), ("teacher=runs/t.npz", "need quotes"),
                         ("arch.depth=3", r"unknown \[arch\] settings"),
                         ("epochs=", "epochs must be a whole number, got ''"),
                         ('epochs="5"', "epochs must be a whole number, got '5'"),
                         ("budget_minutes=", "budget_minutes must be a number"),
                         ("arch.widths=", "widths must be a non-empty list")]:
        with pytest.raises(ConfigError, match=message):
            load_train_config(None, parse_overrides([bad]))
    res = subprocess.run([sys.executable, "-m", "confbot", "model", "train", "--out",
                          str(tmp_path / "run"), "--set", "epochs=zero"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "--set 'epochs=zero'" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "run").exists()


def test_distillation_targets_mix_labels_with_softened_teacher_scores() -> None:
    y = np.array([0, 3])
    teacher = np.array([[0.1, 0.0, 0.0, 0.9, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.6, 0.4, 0.0, 0.0]])
    assert np.allclose(distill_targets(y, teacher, 0.0, 1.0), np.eye(7)[y])
    assert np.allclose(distill_targets(y, teacher, 1.0, 1.0), teacher, atol=1e-6)
    half = distill_targets(y, teacher, 0.5, 1.0)
    assert np.allclose(half[0, [0, 3]], [0.55, 0.45], atol=1e-6)
    assert np.allclose(half.sum(1), 1)
    soft = distill_targets(y, teacher, 1.0, 2.0)  # T = 2: sqrt, renormalised
    assert np.allclose(soft[1, [3, 4]], np.sqrt([0.6, 0.4]) / np.sqrt([0.6, 0.4]).sum(), atol=1e-3)


def test_learning_rate_warms_up_then_decays_to_the_floor() -> None:
    cfg = TrainConfig(epochs=10, warmup_epochs=2, peak_lr=1e-3, min_lr=1e-5)
    steps = 100
    warm = [lr_at(s, steps, cfg) for s in range(0, 200)]
    assert warm == sorted(warm) and warm[-1] == pytest.approx(1e-3)
    decay = [lr_at(s, steps, cfg) for s in range(200, 1000)]
    assert decay == sorted(decay, reverse=True)
    assert lr_at(999, steps, cfg) == pytest.approx(1e-5, abs=1e-7)
    assert lr_at(600, steps, cfg) == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5))


def test_with_weight_averaging_the_rate_decays_to_swa_lr_then_holds() -> None:
    cfg = TrainConfig(epochs=10, warmup_epochs=1, peak_lr=1e-3, min_lr=1e-5, swa_start=4,
                      swa_lr=2e-4)
    steps = 100
    assert lr_at(99, steps, cfg) == pytest.approx(1e-3)  # the warm-up is unchanged
    decay = [lr_at(s, steps, cfg) for s in range(100, 300)]
    assert decay == sorted(decay, reverse=True) and decay[-1] > 2e-4
    assert lr_at(200, steps, cfg) == pytest.approx(2e-4 + 0.5 * (1e-3 - 2e-4))
    # From the first step of epoch 4 to the end, whatever the epoch the run is fitted to.
    assert {lr_at(s, steps, cfg, e) for s in (300, 650, 999) for e in (6, 10)} == {2e-4}


def test_a_shorter_schedule_ends_on_its_own_last_epoch() -> None:
    cfg = TrainConfig(epochs=100, warmup_epochs=2, peak_lr=1e-3, min_lr=1e-5)
    assert lr_at(999, 100, cfg, 10) == pytest.approx(1e-5, abs=1e-7)
    assert lr_at(999, 100, cfg) > 9e-4  # a tenth of the way down the config's own schedule
    assert lr_at(150, 100, cfg, 10) == lr_at(150, 100, cfg)  # the warm-up is the same


def test_training_crops_each_face_at_its_own_whole_pixel_offset() -> None:
    from confbot.modeling.architecture import build_backbone, build_training_model

    arch = ArchitectureConfig(widths=(4, 8), convs_per_stage=1, head_units=8)
    model = build_training_model(build_backbone(arch), arch, seed=3, erase_prob=0.0)
    shift, crop = model.get_layer("aug_crop_shift"), model.get_layer("aug_crop")
    faces = np.random.default_rng(0).random((900, 48, 48, 1)).astype(np.float32)
    out = np.asarray(crop(shift(faces, training=True), training=True))
    assert out.shape == (900, 40, 40, 1)
    offsets = []
    for face, cropped in zip(faces, out, strict=True):
        found = [(dy, dx) for dy in range(9) for dx in range(9)
                 if np.array_equal(face[dy:dy + 40, dx:dx + 40], cropped)]
        assert len(found) == 1  # an exact crop of the face, no interpolation, no fill
        offsets.append(found[0])
    # Keras' RandomCrop would give one offset for the whole batch. Each of the 9 offsets a
    # way takes about a ninth (100 of 900); the outermost ones too, not half as many.
    for axis in (0, 1):
        counts = np.bincount([o[axis] for o in offsets], minlength=9)
        assert counts.min() > 70 and counts.max() < 130, counts
    centre = np.asarray(crop(shift(faces, training=False), training=False))
    assert np.array_equal(centre, faces[:, 4:44, 4:44])


@pytest.mark.parametrize("done, planned, left_s, epoch_s, current, expected", [
    (2, 300, 400.0, 4.0, 300, 102),  # 100 more fit
    (2, 50, 400.0, 4.0, 50, 50),     # never past the plan
    (7, 300, -5.0, 4.0, 30, 7),      # already over: end here
    (7, 300, 3.9, 4.0, 30, 7),       # not one more whole epoch
    (7, 300, 92.0, 4.0, 29, 29),     # up by one only: stays where it was
    (7, 300, 96.0, 4.0, 29, 31),     # up by two: moves
    (7, 300, 84.0, 4.0, 29, 28),     # down by one: moves
])
def test_a_budget_fitted_schedule_takes_the_epochs_that_fit(
        done: int, planned: int, left_s: float, epoch_s: float, current: int,
        expected: int) -> None:
    assert fitted_epochs(done, planned, left_s, epoch_s, current) == expected


def test_a_fitted_schedule_holds_still_when_epochs_alternate_in_speed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Stop 27's run alternated 68 s and 82 s epochs (a validation and checkpoint pattern), and
    a median of the last five flipped its end between 83 and 98 epochs for the whole run."""
    import confbot.modeling.train as train_mod

    now = [0.0]
    monkeypatch.setattr(train_mod, "_clock", lambda: now[0])
    cfg = load_train_config(None, {"epochs": 200, "budget_minutes": 100.0,
                                   "fit_schedule_to_budget": True})
    plan = train_mod.BudgetPlan(cfg, {"epochs_done": 0, "wall_seconds": 0.0})
    ends = []
    for done in range(1, 61):
        now[0] += 68.0 if done % 2 else 82.0
        plan.epoch_ended(done)
        ends.append(plan.epochs)
    # 6,000 s at 75 s an epoch is 80 epochs; 68 s alone would say 86-88, 82 s alone 74-75.
    settled = ends[train_mod.FIT_WINDOW:]
    assert max(settled) - min(settled) <= 1 and abs(settled[-1] - 80) <= 1, ends


def test_a_history_with_columns_this_version_does_not_write_is_refused(tmp_path: Path) -> None:
    from confbot.modeling.train import upgrade_history

    history = tmp_path / "history.csv"
    history.write_text("epoch,loss,top5\n1,1.2,0.9\n")
    with pytest.raises(ConfigError, match=r"columns this version does not write: \['top5'\]"):
        upgrade_history(history)
    assert history.read_text() == "epoch,loss,top5\n1,1.2,0.9\n"  # left as it was


def test_class_weights_lift_rare_classes_and_keep_the_mean_loss_scale() -> None:
    y = np.array([0] * 500 + [1] * 10 + [2] * 490 + [3] * 900 + [4] * 600 + [5] * 400 + [6] * 600)
    w = class_weights(y, power=0.3)
    counts = np.bincount(y)
    assert w[1] > w[0] > w[3]
    assert float(np.average([w[i] for i in range(7)], weights=counts)) == pytest.approx(1.0)
    assert list(class_weights(y, power=0.0).values()) == pytest.approx([1.0] * 7)


# --- data ----------------------------------------------------------------------------------

@pytest.mark.parametrize("arrays, message", [
    ({"x": np.zeros((3, 48, 48), np.uint8)}, "expected arrays 'x' and 'y'"),
    ({"x": np.zeros((3, 48, 48), np.float32), "y": np.zeros(3, int)}, "must be uint8"),
    ({"x": np.zeros((3, 48, 48), np.uint8), "y": np.zeros(4, int)}, "'y' must have shape"),
    ({"x": np.zeros((3, 48, 48), np.uint8), "y": np.array([0, 7, 1])}, "integer labels 0..6"),
    ({"x": np.zeros((0, 48, 48), np.uint8), "y": np.zeros(0, int)}, "N > 0"),
])
def test_a_malformed_face_set_is_refused(tmp_path: Path, arrays: dict, message: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=message):
        load_face_set(path)


def test_a_missing_or_unreadable_face_set_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load_face_set(tmp_path / "absent.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip at all")
    with pytest.raises(DataError, match=r"not a readable \.npz"):
        load_face_set(tmp_path / "junk.npz")


# --- real (tiny) training runs -------------------------------------------------------------

def test_train_records_every_epoch_exports_and_is_reproducible(tmp_path: Path) -> None:
    from confbot.modeling.train import train
    from confbot.vision import load_classifier

    cfg = _tiny_config(tmp_path)
    run_a, run_b = tmp_path / "a", tmp_path / "b"
    train(cfg, run_a, resume=False, command="confbot model train (test)")
    train(cfg, run_b, resume=False, command="confbot model train (test)")

    state = json.loads((run_a / "run.json").read_text())
    assert state["epochs_done"] == 2 and 1 <= state["best_epoch"] <= 2
    assert state["command"] == "confbot model train (test)"
    assert state["train_sha256"] == load_face_set(Path(cfg.train_data)).sha256
    assert (run_a / "last.keras").is_file() and (run_a / "best.weights.h5").is_file()
    rows = _history(run_a)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert max(float(r["val_accuracy"]) for r in rows) == pytest.approx(state["best_val_accuracy"], abs=1e-4)
    # Same seed, same data, same config: the same numbers.
    assert [r["loss"] for r in rows] == [r["loss"] for r in _history(run_b)]

    manifest = run_a / "export" / "emotion_cnn.json"
    recorded = json.loads(manifest.read_text())
    assert recorded["training"]["best_epoch"] == state["best_epoch"]
    from confbot.modeling.data import face_statistics

    mean, sd = face_statistics(load_face_set(Path(cfg.train_data)).x)
    assert recorded["input"]["standardize"] == {"mean": mean, "sd": sd}
    classifier = load_classifier(manifest, threads=1, tta="none")
    val = load_face_set(Path(cfg.val_data))
    scores = classifier.classify(val.x[:8])
    assert np.asarray(scores).shape == (8, 7)
    assert np.allclose(np.asarray(scores).sum(axis=1), 1.0, atol=1e-4)


def test_zoom_settings_reach_the_zoom_layer(tmp_path: Path) -> None:
    from confbot.modeling.architecture import build_backbone, build_training_model

    path = tmp_path / "zoom.toml"
    path.write_text("zoom_in = 0.2\nzoom_out = 0.12\n")
    cfg = load_train_config(path)
    assert (cfg.zoom_in, cfg.zoom_out) == (0.2, 0.12)
    assert (load_train_config(None).zoom_in, load_train_config(None).zoom_out) == (0.1, 0.1)
    arch = cfg.arch
    model = build_training_model(build_backbone(arch), arch, seed=3, erase_prob=0.0,
                                 zoom=(cfg.zoom_in, cfg.zoom_out))
    assert tuple(model.get_layer("aug_zoom").height_factor) == (-0.2, 0.12)


def _shrunk_sides(out: np.ndarray, changed: np.ndarray,
                  shrunk: Callable[[int, int], np.ndarray], atol: float = 1e-8) -> set[int]:
    """The low-resolution sides that faces `changed` of `out` were each shrunk to, where
    `shrunk(i, side)` is face i shrunk to `side` by the reference; fails on a face that
    matches none."""
    from confbot.modeling.architecture import LOW_RES_SIDES

    sides = set()
    for i in changed:
        for side in LOW_RES_SIDES:
            if np.allclose(out[i], shrunk(i, side), atol=atol):
                sides.add(side)
                break
        else:
            raise AssertionError(f"face {i} was changed, but not to one of {LOW_RES_SIDES}")
    return sides


def test_low_resolution_shrinks_a_share_of_the_faces_and_resumes(tmp_path: Path) -> None:
    from confbot.modeling.architecture import LOW_RES_SIDES, RandomLowResolution
    from confbot.modeling.train import train

    rng = np.random.default_rng(4)
    faces = rng.random((200, 48, 48, 1)).astype(np.float32)
    out = np.asarray(RandomLowResolution(0.5, seed=1)(faces, training=True))
    changed = np.abs(out - faces).reshape(200, -1).max(axis=1) > 1e-3
    assert 0.35 < changed.mean() < 0.65
    assert np.array_equal(out[~changed], faces[~changed])
    # A shrunk face keeps only the detail of its small side: at most that of 32 pixels.
    lost = [np.abs(np.fft.fft2(f[..., 0]))[20:28, 20:28].mean() for f in out[changed]]
    kept = [np.abs(np.fft.fft2(f[..., 0]))[20:28, 20:28].mean() for f in faces[changed]]
    assert max(lost) < 0.5 * min(kept)
    # Each changed face is its own image shrunk to one of the sides, not another face's.
    from keras import ops

    def shrunk(i: int, side: int) -> np.ndarray:
        low = ops.image.resize(faces[i:i + 1], (side, side), interpolation="bilinear",
                               antialias=True)
        return np.asarray(ops.image.resize(low, (48, 48), interpolation="bilinear"))[0]

    sides = _shrunk_sides(out, np.flatnonzero(changed), shrunk, atol=1e-5)
    assert sides == set(LOW_RES_SIDES)
    assert max(LOW_RES_SIDES) < 48
    assert not RandomLowResolution(0.5).supports_jit  # its resize has no XLA kernel
    assert np.array_equal(np.asarray(RandomLowResolution(1.0, seed=1)(faces, training=False)),
                          faces)

    cfg = _tiny_config(tmp_path, epochs=1, low_res_prob=0.5)
    run = tmp_path / "run"
    train(cfg, run, resume=False, command="first")
    train(_tiny_config(tmp_path, epochs=2, low_res_prob=0.5), run, resume=True, command="again")
    assert json.loads((run / "run.json").read_text())["epochs_done"] == 2
    with pytest.raises(ConfigError, match="--resume: low_res_prob changed"):
        train(_tiny_config(tmp_path, epochs=3, low_res_prob=0.2), run, resume=True, command="x")


def test_a_whole_face_network_is_shifted_by_at_most_shift_pixels(tmp_path: Path) -> None:
    from confbot.modeling.architecture import build_backbone, build_training_model
    from confbot.modeling.train import train
    from confbot.vision import load_classifier

    arch = ArchitectureConfig(widths=(4, 8), convs_per_stage=1, head_units=8, crop_size=48)
    model = build_training_model(build_backbone(arch), arch, seed=3, erase_prob=0.0,
                                 shift_pixels=4)
    layer_names = [layer.name for layer in model.layers]
    assert "aug_shift" in layer_names and "aug_crop" not in layer_names
    faces = np.zeros((64, 48, 48, 1), np.float32)
    faces[:, 20:28, 20:28] = 1.0  # a square whose centre of mass is (23.5, 23.5)
    shifted = np.asarray(model.get_layer("aug_shift")(faces, training=True))
    rows, cols = np.indices((48, 48))
    mass = shifted[..., 0].sum(axis=(1, 2))
    dy = (shifted[..., 0] * rows).sum(axis=(1, 2)) / mass - 23.5
    dx = (shifted[..., 0] * cols).sum(axis=(1, 2)) / mass - 23.5
    assert np.abs(dy).max() <= 4.01 and np.abs(dx).max() <= 4.01
    assert np.abs(dy).max() > 2 and np.abs(dx).max() > 2  # it does move them
    assert np.array_equal(np.asarray(model.get_layer("aug_shift")(faces, training=False)), faces)
    unshifted = build_training_model(build_backbone(arch), arch, seed=3, erase_prob=0.0,
                                     shift_pixels=0)
    assert "aug_shift" not in [layer.name for layer in unshifted.layers]

    # A whole run at that size: trained, exported and loaded by the product.
    cfg = _tiny_config(tmp_path, arch={"widths": [4, 8], "convs_per_stage": 1,
                                       "head_units": 8, "crop_size": 48})
    train(cfg, tmp_path / "run", resume=False, command="confbot model train (test)")
    manifest = tmp_path / "run" / "export" / "emotion_cnn.json"
    assert json.loads(manifest.read_text())["architecture"]["crop_size"] == 48
    scores = load_classifier(manifest, threads=1, tta="flip").classify(
        load_face_set(Path(cfg.val_data)).x[:8])
    assert np.allclose(np.asarray(scores).sum(axis=1), 1.0, atol=1e-4)


def test_resume_continues_from_the_last_checkpoint(tmp_path: Path) -> None:
    from confbot.modeling.train import train

    run = tmp_path / "run"
    train(_tiny_config(tmp_path, epochs=1), run, resume=False, command="first")
    with pytest.raises(ConfigError, match="already holds a run"):
        train(_tiny_config(tmp_path, epochs=1), run, resume=False, command="again")
    # The run began under a version that wrote six columns of history.
    history = run / "history.csv"
    old = [line.split(",")[:6] for line in history.read_text().splitlines()]
    history.write_text("".join(",".join(cells) + "\n" for cells in old))
    train(_tiny_config(tmp_path, epochs=3), run, resume=True, command="resumed")
    state = json.loads((run / "run.json").read_text())
    assert state["epochs_done"] == 3
    rows = _history(run)
    assert list(rows[0]) == list(HISTORY_FIELDS)
    assert rows[0]["loss"] == old[1][1] and rows[0]["averaged"] == ""
    assert rows[2]["averaged"] == "0"
    assert state["resumed"] == [{"command": "resumed", "at_epoch": 1}]
    assert state["config"]["epochs"] == 3  # the changed config is recorded
    assert [r["epoch"] for r in _history(run)] == ["1", "2", "3"]
    # What last.keras holds cannot change on a resume: it would go on as it was, unrecorded.
    for change in ({"label_smoothing": 0.2}, {"weight_decay": 0.05}, {"seed": 7},
                   {"arch": {"widths": [4, 8], "convs_per_stage": 1, "head_units": 9,
                             "crop_size": 40}}):
        with pytest.raises(ConfigError, match=f"--resume: {next(iter(change))} changed"):
            train(_tiny_config(tmp_path, epochs=4, **change), run, resume=True, command="x")
    assert json.loads((run / "run.json").read_text())["epochs_done"] == 3
    with pytest.raises(ConfigError, match="no checkpoint"):
        train(_tiny_config(tmp_path), tmp_path / "empty", resume=True, command="x")


def test_an_auto_precision_run_records_its_choice_and_resumes_with_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    import keras

    import confbot.modeling.train as train_module
    from confbot.hardware import cpu_info, parse_cpuinfo

    def caller_policy() -> str:
        return str(keras.mixed_precision.global_policy().name)

    # A policy neither the run nor its export uses: train() puts the caller's back.
    keras.mixed_precision.set_global_policy("mixed_float16")
    request.addfinalizer(lambda: keras.mixed_precision.set_global_policy("float32"))
    run = tmp_path / "run"
    train_module.train(_tiny_config(tmp_path, epochs=1, mixed_bfloat16="auto"), run,
                       resume=False, command="first")
    assert caller_policy() == "mixed_float16"
    started = json.loads((run / "config.json").read_text())["mixed_bfloat16"]
    assert started is (cpu_info().bf16_arithmetic is True)
    # Resumed on a machine where "auto" would pick the other precision: it keeps its own.
    other = "avx2 fma" if started else "avx2 fma avx512_bf16 amx_bf16"
    monkeypatch.setattr(train_module, "cpu_info",
                        lambda: parse_cpuinfo(f"model name : other\nflags : {other}\n"))
    train_module.train(_tiny_config(tmp_path, epochs=2, mixed_bfloat16="auto"), run,
                       resume=True, command="resumed")
    state = json.loads((run / "run.json").read_text())
    assert state["epochs_done"] == 2 and state["config"]["mixed_bfloat16"] is started
    with pytest.raises(ConfigError, match="--resume: mixed_bfloat16 changed"):
        train_module.train(_tiny_config(tmp_path, epochs=3, mixed_bfloat16=not started), run,
                           resume=True, command="x")
    assert caller_policy() == "mixed_float16"  # also after a run that failed having set its own
    (run / "run.json").write_text('{"epochs_done": ')
    with pytest.raises(ConfigError, match="--resume: cannot read the run's state"):
        train_module.train(_tiny_config(tmp_path, epochs=3), run, resume=True, command="x")


def test_training_speed_times_each_precision_and_leaves_float32(tmp_path: Path) -> None:
    import keras

    from confbot.modeling.train import training_speed

    cfg = _tiny_config(tmp_path)
    for bf16 in (False, True):
        result = training_speed(cfg, bf16=bf16, steps=2)
        assert result["policy"] == ("mixed_bfloat16" if bf16 else "float32")
        assert result["steps"] == 2 and result["batch_size"] == 32
        assert result["images_per_s"] > 0
        assert result["epoch_s"] == pytest.approx(224 / result["images_per_s"], abs=0.06)
        assert keras.mixed_precision.global_policy().name == "float32"
    with pytest.raises(ConfigError, match="steps must be at least 1"):
        training_speed(cfg, bf16=False, steps=0)


def test_bench_train_reports_both_precisions_and_refuses_a_bad_one(tmp_path: Path) -> None:
    cfg = _tiny_config(tmp_path)
    toml = tmp_path / "tiny.toml"
    toml.write_text(f'train_data = "{cfg.train_data}"\nval_data = "{cfg.val_data}"\n'
                    "batch_size = 32\n[arch]\nwidths = [4, 8]\nconvs_per_stage = 1\n"
                    "head_units = 8\n")
    bench = [sys.executable, "-m", "confbot", "bench", "train", "--config", str(toml)]
    res = subprocess.run([*bench, "--steps", "2", "--json"], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert [r["policy"] for r in out["results"]] == ["float32", "mixed_bfloat16"]
    assert all(r["images_per_s"] > 0 for r in out["results"])
    assert out["auto_picks"] in ("float32", "mixed_bfloat16") and "flags" in out["cpu"]
    for bad, message in [(["--precision", "half"], "--precision must be one of"),
                         (["--steps", "0"], "steps must be at least 1"),
                         (["--set", "batch_size=0"], "batch_size must be positive")]:
        res = subprocess.run([*bench, *bad], capture_output=True, text=True, timeout=300)
        assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr


def test_a_run_with_ema_validates_and_keeps_the_average_and_resumes_from_the_weights(
        tmp_path: Path) -> None:
    import keras

    from confbot.modeling.averaging import averaged_weights
    from confbot.modeling.train import train

    # On a model of its own: inside the block the weights are the averages, after it they
    # are back to what the optimizer stepped.
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.AdamW(0.1, use_ema=True, ema_momentum=0.9),
                  loss="mse")
    model.fit(np.ones((8, 3)), np.zeros((8, 2)), batch_size=2, epochs=1, verbose=0)
    # fit() ends by writing the averages into the weights; step once more so they differ.
    model.train_on_batch(np.ones((2, 3)), np.full((2, 2), 5.0))
    stepped = [v.numpy().copy() for v in model.trainable_variables]
    averages = [a.numpy().copy() for a in model.optimizer._model_variables_moving_average]
    assert not np.allclose(stepped[0], averages[0])
    variables = model.trainable_variables
    with averaged_weights(model):
        assert all(np.allclose(v.numpy(), a) for v, a in zip(variables, averages, strict=True))
    assert all(np.allclose(v.numpy(), s) for v, s in zip(variables, stepped, strict=True))

    # A whole run: the best checkpoint holds the average, the last checkpoint the weights.
    arch, run = _tiny_config(tmp_path).arch, tmp_path / "ema"
    cfg = _tiny_config(tmp_path, epochs=1, ema_momentum=0.9)
    train(cfg, run, resume=False, command="ema")
    last = keras.models.load_model(run / "last.keras", compile=True)
    assert last.optimizer.use_ema
    weights = [v.numpy() for v in last.get_layer("backbone").trainable_variables]
    with averaged_weights(last):
        average = [v.numpy() for v in last.get_layer("backbone").trainable_variables]
    best = _trainable(arch, run / "best.weights.h5")
    assert all(np.allclose(b, a, atol=1e-6) for b, a in zip(best, average, strict=True))
    assert not all(np.allclose(b, w, atol=1e-6) for b, w in zip(best, weights, strict=True))
    train(dataclasses.replace(cfg, epochs=2), run, resume=True, command="ema resumed")
    assert json.loads((run / "run.json").read_text())["epochs_done"] == 2
    assert (run / "export" / "emotion_cnn.json").is_file()


def test_weight_averaging_validates_the_average_and_resumes_it(tmp_path: Path) -> None:
    import keras

    from confbot.modeling.train import train

    arch, run = _tiny_config(tmp_path).arch, tmp_path / "swa"
    cfg = _tiny_config(tmp_path, epochs=3, swa_start=2, swa_lr=1e-3, swa_bn_faces=64)

    def last_weights() -> list[np.ndarray]:
        model = keras.models.load_model(run / "last.keras", compile=False)
        return [v.numpy() for v in model.get_layer("backbone").trainable_variables]

    # Epoch 2 starts the average: it is that epoch's weights alone.
    train(dataclasses.replace(cfg, epochs=2), run, resume=False, command="swa")
    second = last_weights()
    assert all(np.allclose(a, w) for a, w in zip(_trainable(arch, run / "swa-1.weights.h5"),
                                                   second, strict=True))
    # Resumed, epoch 3 is folded in: the average of the two epochs' weights.
    train(cfg, run, resume=True, command="swa resumed")
    third = last_weights()
    assert not all(np.allclose(a, b) for a, b in zip(second, third, strict=True))
    assert not (run / "swa-1.weights.h5").exists()  # gone once run.json names the next
    average = _trainable(arch, run / "swa-2.weights.h5")
    assert all(np.allclose(a, (b + c) / 2, atol=1e-6)
               for a, b, c in zip(average, second, third, strict=True))
    rows = _history(run)
    assert [r["averaged"] for r in rows] == ["0", "1", "2"]
    assert rows[0]["raw_val_accuracy"] == "" and all(r["raw_val_accuracy"] for r in rows[1:])
    # The average is validated with its batch norms re-estimated, not averaged.
    state = json.loads((run / "run.json").read_text())
    assert state["swa_count"] == 2
    assert state["best_val_accuracy"] == pytest.approx(
        max(float(r["val_accuracy"]) for r in rows), abs=1e-4)
    assert state["swa_file"] == "swa-2.weights.h5"
    backbone = _backbone(arch, run / "swa-2.weights.h5")
    bn = next(layer for layer in backbone.layers
              if isinstance(layer, keras.layers.BatchNormalization))
    averaged_mean = bn.get_weights()[2].copy()
    faces = load_face_set(Path(cfg.train_data)).x
    pick = np.sort(np.random.default_rng(cfg.seed).choice(len(faces), 64, replace=False))
    from confbot.modeling.recalibrate import recalibrate_bn
    recalibrate_bn(backbone, faces[pick], arch.crop_size)
    assert not np.allclose(bn.get_weights()[2], averaged_mean)
    from confbot.modeling.architecture import build_inference_model
    val = load_face_set(Path(cfg.val_data))
    probs = build_inference_model(backbone, arch).predict(val.x[..., None] / 255.0, verbose=0)
    assert float(rows[2]["val_accuracy"]) == pytest.approx((probs.argmax(1) == val.y).mean(),
                                                           abs=1e-4)
    # Its file lost, the average cannot go on.
    (run / "swa-2.weights.h5").unlink()
    with pytest.raises(ConfigError, match=r"swa-2\.weights\.h5 is missing"):
        train(dataclasses.replace(cfg, epochs=4), run, resume=True, command="again")


def _numbered_faces(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Face i is filled with the value i and labelled i (one-hot), weight i + 1."""
    x = np.repeat(np.arange(n, dtype=np.float32), 48 * 48).reshape(n, 48, 48, 1)
    return x, np.eye(n, dtype=np.float32), np.arange(1, n + 1, dtype=np.float32)


@pytest.mark.parametrize("kind", ["mixup", "cutmix"])
def test_mixing_mixes_faces_targets_and_weights_in_one_proportion(kind: str) -> None:
    from confbot.modeling.mixing import mix_batch

    x, y, w = _numbered_faces(8)
    before = x.copy()
    mx, my, mw = mix_batch(x, y, w, np.random.default_rng(0), kind=kind, prob=1.0, alpha=1.0)
    assert np.array_equal(x, before)  # the caller's batch is left as it was
    assert np.allclose(my.sum(axis=1), 1.0)
    for i in range(8):
        others = [j for j in np.flatnonzero(my[i]) if j != i]
        assert len(others) == 1 and 0 < my[i, i] < 1  # every face mixed with one other
        j, keep = others[0], my[i, i]
        assert mw[i] == pytest.approx(keep * w[i] + (1 - keep) * w[j])
        if kind == "mixup":
            assert np.allclose(mx[i], keep * i + (1 - keep) * j)
        else:  # a box of face j, its area the share the target gives j
            assert set(np.unique(mx[i])) <= {float(i), float(j)}
            assert (mx[i] == j).mean() == pytest.approx(1 - keep)
    # Nothing mixed: the batch as it came.
    for kind_, prob in ((kind, 0.0), ("none", 1.0)):
        nx, ny, nw = mix_batch(x, y, w, np.random.default_rng(0), kind=kind_, prob=prob, alpha=1.0)
        assert np.array_equal(nx, x) and np.array_equal(ny, y) and np.array_equal(nw, w)
    with pytest.raises(ValueError, match="mixing must be one of"):
        mix_batch(x, y, w, np.random.default_rng(0), kind="cutout", prob=1.0, alpha=1.0)


def test_mixed_batches_cover_each_epoch_and_repeat_on_resume() -> None:
    from confbot.modeling.mixing import mixed_batches

    x, y, w = _numbered_faces(10)

    def dataset(first_epoch: int) -> Any:
        return mixed_batches(x, y, w, batch_size=4, seed=7, first_epoch=first_epoch,
                             kind="cutmix", prob=0.0, alpha=1.0)

    def epoch_faces(data: Any) -> list[int]:
        return sorted(int(v) for i in range(len(data)) for v in data[i][0][:, 0, 0, 0])

    run = dataset(0)
    assert len(run) == 3
    first = [run[i][0].copy() for i in range(3)]
    assert epoch_faces(run) == list(range(10))  # every face once an epoch
    run.epoch = 1  # as the trainer sets it when epoch 1 begins
    second = [run[i][0] for i in range(3)]
    assert epoch_faces(run) == list(range(10))
    assert not all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    # A run resumed at epoch 1 sees epoch 1's batches.
    resumed = dataset(1)
    assert all(np.array_equal(resumed[i][0], second[i]) for i in range(3))


def test_a_run_can_train_with_sgd_and_resume_with_its_momentum(tmp_path: Path) -> None:
    import keras

    from confbot.modeling.train import train

    run = tmp_path / "sgd"
    cfg = _tiny_config(tmp_path, optimizer="sgd", momentum=0.8, peak_lr=0.05,
                       weight_decay=1e-3)
    train(dataclasses.replace(cfg, epochs=1), run, resume=False, command="sgd")
    optimizer = keras.models.load_model(run / "last.keras").optimizer
    assert isinstance(optimizer, keras.optimizers.SGD) and optimizer.nesterov
    assert optimizer.momentum == pytest.approx(0.8) and optimizer.weight_decay == pytest.approx(1e-3)
    with pytest.raises(ConfigError, match="--resume: optimizer, momentum changed"):
        train(dataclasses.replace(cfg, optimizer="adamw", momentum=0.9), run, resume=True,
              command="x")
    train(cfg, run, resume=True, command="sgd resumed")
    assert [r["epoch"] for r in _history(run)] == ["1", "2"]
    optimizer = keras.models.load_model(run / "last.keras").optimizer
    assert isinstance(optimizer, keras.optimizers.SGD) and optimizer.momentum == pytest.approx(0.8)
    assert optimizer.iterations.numpy() == 2 * 7


def test_a_whole_number_given_for_a_float_setting_loads_as_a_float(tmp_path: Path) -> None:
    """TOML's `momentum = 0` is an int; Keras' SGD itself refuses one."""
    from confbot.modeling.train import train

    path = tmp_path / "sgd.toml"
    path.write_text('optimizer = "sgd"\nmomentum = 0\nweight_decay = 0\npeak_lr = 1\n')
    loaded = load_train_config(path, {"min_lr": 0, "distill_weight": 1})
    for name in ("momentum", "weight_decay", "peak_lr", "min_lr", "distill_weight"):
        assert type(getattr(loaded, name)) is float, name
    assert type(loaded.epochs) is int
    cfg = dataclasses.replace(_tiny_config(tmp_path, epochs=1), optimizer="sgd",
                              momentum=loaded.momentum, weight_decay=loaded.weight_decay)
    train(cfg, tmp_path / "run", resume=False, command="sgd, no momentum")
    assert len(_history(tmp_path / "run")) == 1


def test_a_run_trains_on_mixed_batches_and_resumes(tmp_path: Path) -> None:
    from confbot.modeling.train import train

    run = tmp_path / "cutmix"
    cfg = _tiny_config(tmp_path, mixing="cutmix", mix_prob=0.5)
    train(dataclasses.replace(cfg, epochs=1), run, resume=False, command="cutmix")
    train(cfg, run, resume=True, command="cutmix resumed")
    rows = _history(run)
    assert [r["epoch"] for r in rows] == ["1", "2"] and all(math.isfinite(float(r["loss"]))
                                                            for r in rows)
    assert (run / "export" / "emotion_cnn.json").is_file()


def _backbone(arch: ArchitectureConfig, weights: Path) -> Any:
    from confbot.modeling.architecture import build_backbone

    backbone = build_backbone(arch)
    backbone.load_weights(weights)
    return backbone


def _trainable(arch: ArchitectureConfig, weights: Path | None) -> list[np.ndarray]:
    """The trainable arrays of a network, loaded from `weights` (None: freshly initialised)."""
    from confbot.modeling.architecture import build_backbone

    backbone = build_backbone(arch)
    if weights is not None:
        backbone.load_weights(weights)
    return [np.asarray(w) for w in backbone.trainable_weights]


def test_augmentation_works_in_float32_under_a_bfloat16_policy() -> None:
    import keras

    from confbot.modeling.architecture import build_backbone, build_training_model, dtype_policy

    arch = ArchitectureConfig(widths=(4, 8), convs_per_stage=1, head_units=8)
    with dtype_policy(True):
        model = build_training_model(build_backbone(arch), arch, seed=3, erase_prob=0.5)
        crop = keras.Model(model.input, model.get_layer("aug_crop").output)
    augmentation = [layer for layer in model.layers if layer.name.startswith("aug_")]
    assert len(augmentation) == 6
    assert {layer.compute_dtype for layer in augmentation} == {"float32"}
    assert model.get_layer("backbone").compute_dtype == "bfloat16"
    faces = np.random.default_rng(0).random((4, 48, 48, 1)).astype(np.float32)
    # Pixels that bfloat16 would round (to about a grey level) reach the backbone as they are.
    assert np.array_equal(np.asarray(crop(faces, training=False)), faces[:, 4:44, 4:44])
    assert np.asarray(model(faces, training=True)).shape == (4, 7)


def test_loading_an_export_builds_it_in_float32_and_keeps_the_callers_policy(
        request: pytest.FixtureRequest) -> None:
    import keras

    from confbot.modeling.export import load_export

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    request.addfinalizer(lambda: keras.mixed_precision.set_global_policy("float32"))
    loaded = load_export(REPO / "models" / "emotion_cnn.json")
    assert loaded.backbone.compute_dtype == "float32"
    assert {layer.compute_dtype for layer in loaded.backbone.layers} == {"float32"}
    assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"


def test_a_run_can_start_from_an_exports_weights(tmp_path: Path) -> None:
    from confbot.modeling.train import train

    first, arch = tmp_path / "first", _tiny_config(tmp_path).arch
    train(_tiny_config(tmp_path), first, resume=False, command="first")
    weights = first / "export" / "emotion_cnn.weights.h5"
    manifest = json.loads((first / "export" / "emotion_cnn.json").read_text())
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert manifest["weights"] == {"file": weights.name, "sha256": digest}

    # A learning rate of ~0 keeps the network where it started: the first run's best epoch.
    second = tmp_path / "second"
    train(_tiny_config(tmp_path, epochs=1, peak_lr=1e-12, min_lr=1e-12, init_weights=str(weights)),
          second, resume=False, command="second")
    state = json.loads((second / "run.json").read_text())
    assert state["init_weights_sha256"] == digest
    started, trained = _trainable(arch, weights), _trainable(arch, second / "best.weights.h5")
    assert all(np.allclose(a, b, atol=1e-6) for a, b in zip(started, trained, strict=True))
    assert not all(np.allclose(a, b, atol=1e-3) for a, b in zip(started, _trainable(arch, None),
                                                              strict=True))
    exported = json.loads((second / "export" / "emotion_cnn.json").read_text())
    assert exported["training"]["init_weights_sha256"] == digest

    wider = _tiny_config(tmp_path, init_weights=str(weights), arch={"widths": [8, 16],
                         "convs_per_stage": 1, "head_units": 8, "crop_size": 40})
    with pytest.raises(ConfigError, match="same \\[arch\\]"):
        train(wider, tmp_path / "wider", resume=False, command="wider")
    junk = tmp_path / "junk.weights.h5"
    junk.write_bytes(b"not hdf5")
    for bad in (junk, tmp_path / "missing.weights.h5"):
        with pytest.raises(ConfigError, match="cannot start from these weights"):
            train(_tiny_config(tmp_path, init_weights=str(bad)), tmp_path / bad.stem, resume=False,
                  command="bad")


def _random_backbone(arch: ArchitectureConfig, seed: int):  # type: ignore[no-untyped-def]
    """A backbone with random weights and random batch-norm statistics (none left at 0/1)."""
    import keras

    from confbot.modeling.architecture import build_backbone

    keras.mixed_precision.set_global_policy("float32")
    rng = np.random.default_rng(seed)
    net = build_backbone(arch)
    net.set_weights([rng.uniform(0.01, 0.05, w.shape).astype(np.float32) if "variance" in v.path
                     else rng.normal(0, 0.3, w.shape).astype(np.float32)
                     for v, w in zip(net.weights, net.get_weights(), strict=True)])
    return net


def test_widening_keeps_the_scores_and_refuses_other_shapes() -> None:
    from confbot.modeling.architecture import build_backbone
    from confbot.modeling.resize import resize_backbone

    narrow = ArchitectureConfig(widths=(4, 8), convs_per_stage=2, head_units=6, crop_size=40)
    wide = dataclasses.replace(narrow, widths=(7, 16), head_units=11)
    src = _random_backbone(narrow, seed=3)
    rng = np.random.default_rng(4)
    faces = (rng.uniform(0, 1, (16, 40, 40, 1)) * rng.uniform(0, 1, (16, 1, 1, 1))).astype(
        np.float32)
    before = src.predict(faces, verbose=0)
    assert before.std(axis=0).min() > 1e-3  # the scores depend on the face
    dst = build_backbone(wide)
    resize_backbone(src, dst, narrow, wide, seed=0)
    assert dst.get_layer("s1_conv1").get_weights()[0].shape == (3, 3, 16, 16)
    assert np.allclose(dst.predict(faces, verbose=0), before, atol=1e-5)
    # Noise breaks the symmetry of the copies, and only nudges the scores.
    resize_backbone(src, dst, narrow, wide, seed=0, noise=0.05)
    noisy = dst.predict(faces, verbose=0)
    assert not np.allclose(noisy, before, atol=1e-5) and np.allclose(noisy, before, atol=0.1)

    for bad, message in [
        (dataclasses.replace(narrow, widths=(4, 8, 16)), "only the widths may change"),
        (dataclasses.replace(narrow, convs_per_stage=1), "only the widths may change"),
        (dataclasses.replace(narrow, widths=(4, 0)), "at least 1"),
    ]:
        with pytest.raises(ConfigError, match=message):
            resize_backbone(src, None, narrow, bad, seed=0)


def test_mean_relu_output_matches_sampling() -> None:
    from confbot.modeling.resize import mean_relu_output

    gamma, beta = np.array([1.0, 0.5, 2.0, -1.5]), np.array([0.0, -1.0, 0.7, 0.3])
    draws = np.random.default_rng(0).normal(size=(400_000, 1)) * np.abs(gamma) + beta
    assert np.allclose(mean_relu_output([gamma, beta]), np.maximum(draws, 0).mean(axis=0),
                       atol=0.01)
    assert mean_relu_output([np.array([1.0]), np.array([-8.0])])[0] < 1e-9  # a dead channel


def test_pruning_keeps_the_channels_that_carry_the_most() -> None:
    from confbot.modeling.architecture import build_backbone
    from confbot.modeling.resize import resize_backbone

    wide = ArchitectureConfig(widths=(6, 8), convs_per_stage=1, head_units=10, crop_size=40)
    narrow = dataclasses.replace(wide, widths=(3, 4), head_units=5)
    src = _random_backbone(wide, seed=5)
    # In s0, channel 1 is dead (always below zero before the ReLU) and channel 4 is the
    # loudest; channel 2 is loud but nothing in s1 reads it.
    gamma, beta, mean, var = src.get_layer("s0_bn0").get_weights()
    gamma[:], beta[:] = 0.3, 0.0
    beta[1], gamma[4], gamma[2] = -50.0, 3.0, 3.0
    src.get_layer("s0_bn0").set_weights([gamma, beta, mean, var])
    (k1,) = src.get_layer("s1_conv0").get_weights()
    k1[:, :, 2, :] = 0.0
    src.get_layer("s1_conv0").set_weights([k1])

    dst = build_backbone(narrow)
    resize_backbone(src, dst, wide, narrow, seed=0)
    (k0_src,) = src.get_layer("s0_conv0").get_weights()
    (k0_dst,) = dst.get_layer("s0_conv0").get_weights()
    kept = [c for c in range(6) if any(np.array_equal(k0_dst[..., j], k0_src[..., c])
                                       for j in range(3))]
    assert len(kept) == 3 and 4 in kept and 1 not in kept and 2 not in kept
    # The next layer reads the kept channels, in order, with their own weights.
    (k1_dst,) = dst.get_layer("s1_conv0").get_weights()
    assert k1_dst.shape == (3, 3, 3, 4)
    assert any(np.array_equal(k1_dst, k1[:, :, kept, :][..., outs])
               for outs in _combinations(8, 4))
    assert dst.get_layer("scores").get_weights()[0].shape == (5, 7)
    scores = dst.predict(np.random.default_rng(6).uniform(0, 1, (4, 40, 40, 1)), verbose=0)
    assert np.allclose(scores.sum(axis=1), 1.0, atol=1e-5)


def _combinations(n: int, k: int) -> list[list[int]]:
    import itertools

    return [list(c) for c in itertools.combinations(range(n), k)]


def test_a_run_can_start_from_an_export_of_other_widths(tmp_path: Path) -> None:
    from confbot.modeling.architecture import build_backbone
    from confbot.modeling.train import _load_init_weights, train

    first = tmp_path / "first"
    train(_tiny_config(tmp_path), first, resume=False, command="first")
    export = first / "export"
    manifest = export / "emotion_cnn.json"
    digest = hashlib.sha256((export / "emotion_cnn.weights.h5").read_bytes()).hexdigest()
    narrow_arch = _tiny_config(tmp_path).arch
    narrow = build_backbone(narrow_arch)
    narrow.load_weights(export / "emotion_cnn.weights.h5")

    wide_cfg = _tiny_config(tmp_path, init_weights=str(manifest), init_noise=0.0, arch={
        "widths": [6, 12], "convs_per_stage": 1, "head_units": 10, "crop_size": 40})
    wide = build_backbone(wide_cfg.arch)
    assert _load_init_weights(wide, manifest, wide_cfg) == digest
    faces = (load_face_set(Path(wide_cfg.val_data)).x[:, 4:44, 4:44, None] / 255).astype(np.float32)
    assert np.allclose(wide.predict(faces, verbose=0), narrow.predict(faces, verbose=0), atol=1e-5)

    run = tmp_path / "wide"
    train(dataclasses.replace(wide_cfg, epochs=1), run, resume=False, command="wide")
    assert json.loads((run / "run.json").read_text())["init_weights_sha256"] == digest
    assert json.loads((run / "export" / "emotion_cnn.json").read_text())["architecture"][
        "widths"] == [6, 12]

    # A manifest whose weights are missing, altered, or unreadable; a narrower target.
    broken = tmp_path / "broken"
    broken.mkdir()
    meta = json.loads(manifest.read_text())
    (broken / "emotion_cnn.json").write_text(json.dumps(meta))
    (broken / "junk.json").write_text("{not json")
    (broken / "other.weights.h5").write_bytes(b"not hdf5")
    (broken / "altered.json").write_text(json.dumps(
        {**meta, "weights": {"file": "other.weights.h5", "sha256": "0" * 64}}))
    (broken / "unreadable.json").write_text(json.dumps({**meta, "weights": {
        "file": "other.weights.h5", "sha256": hashlib.sha256(b"not hdf5").hexdigest()}}))
    for name, message in [("emotion_cnn.json", "float32 weights beside it"),
                          ("junk.json", "not an export manifest"),
                          ("altered.json", "does not match the sha256"),
                          ("unreadable.json", "does not fit the architecture")]:
        with pytest.raises(ConfigError, match=message):
            _load_init_weights(build_backbone(wide_cfg.arch), broken / name, wide_cfg)
    # A narrower network starts pruned; one of another depth is refused.
    narrower = _tiny_config(tmp_path, init_weights=str(manifest), arch={
        "widths": [2, 3], "convs_per_stage": 1, "head_units": 4, "crop_size": 40})
    pruned = build_backbone(narrower.arch)
    assert _load_init_weights(pruned, manifest, narrower) == digest
    assert pruned.get_layer("fc").get_weights()[0].shape == (3, 4)
    deeper = _tiny_config(tmp_path, init_weights=str(manifest), arch={
        "widths": [6, 12], "convs_per_stage": 2, "head_units": 10, "crop_size": 40})
    with pytest.raises(ConfigError, match="only the widths may change"):
        _load_init_weights(build_backbone(deeper.arch), manifest, deeper)
    with pytest.raises(ConfigError, match="init_noise"):
        _tiny_config(tmp_path, init_noise=-1.0)


def test_a_run_distills_from_a_teacher_model_and_records_it(tmp_path: Path) -> None:
    from confbot.modeling.train import train

    teachers = []
    for name, seed in (("t1", 1), ("t2", 2)):
        train(_tiny_config(tmp_path, seed=seed, epochs=1), tmp_path / name, resume=False,
              command=name)
        teachers.append(tmp_path / name / "export" / "emotion_cnn.json")
    student = tmp_path / "student"
    cfg = _tiny_config(tmp_path, epochs=1, teacher=str(teachers[0]), teacher_tta="flip",
                       distill_weight=0.7)
    train(cfg, student, resume=False, command="student")
    state = json.loads((student / "run.json").read_text())
    assert state["teacher"]["sha256"] == json.loads(teachers[0].read_text())["sha256"]
    assert 0 <= state["teacher"]["train_accuracy"] <= 1
    exported = json.loads((student / "export" / "emotion_cnn.json").read_text())
    assert exported["training"]["teacher"] == state["teacher"]

    with pytest.raises(ConfigError, match="teacher model changed"):
        train(dataclasses.replace(cfg, epochs=2, teacher=str(teachers[1])), student,
              resume=True, command="resumed")
    with pytest.raises(ConfigError, match=r"teacher: .*not found"):
        train(dataclasses.replace(cfg, teacher=str(tmp_path / "none.json")), tmp_path / "x",
              resume=False, command="x")


def test_a_teacher_can_be_a_scores_file_or_an_ensemble(tmp_path: Path) -> None:
    from confbot.modeling.data import file_sha256, load_face_set
    from confbot.modeling.train import train

    cfg = _tiny_config(tmp_path, epochs=1, distill_weight=0.5)
    faces = load_face_set(Path(cfg.train_data))
    right = tmp_path / "right.npz"  # a teacher that always agrees with the labels
    np.savez(right, scores=np.eye(7, dtype=np.float32)[faces.y], train_sha256=faces.sha256)
    train(dataclasses.replace(cfg, teacher=str(right)), tmp_path / "file", resume=False,
          command="file")
    state = json.loads((tmp_path / "file" / "run.json").read_text())
    assert state["teacher"] == {"sha256": file_sha256(right), "train_accuracy": 1.0}

    wrong = tmp_path / "wrong.npz"  # ... and one that never does: the ensemble is split
    np.savez(wrong, scores=np.eye(7, dtype=np.float32)[(faces.y + 1) % 7],
             train_sha256=faces.sha256)
    (tmp_path / "ens.toml").write_text(f'teacher = ["{right}", "{wrong}"]\n')
    listed = load_train_config(tmp_path / "ens.toml")
    assert listed.teacher == (str(right), str(wrong))
    train(dataclasses.replace(cfg, teacher=listed.teacher), tmp_path / "ens", resume=False,
          command="ensemble")
    state = json.loads((tmp_path / "ens" / "run.json").read_text())
    assert state["teacher"]["sha256"] == [file_sha256(right), file_sha256(wrong)]
    # Averaged, each face's two classes tie and argmax takes the lower index: the label,
    # except for neutral (6), whose "wrong" class is angry (0).
    assert state["teacher"]["train_accuracy"] == round(float((faces.y != 6).mean()), 4)
    with pytest.raises(ConfigError, match="teacher model changed"):
        train(dataclasses.replace(cfg, epochs=2, teacher=str(right)), tmp_path / "ens",
              resume=True, command="resumed")

    bad = {
        "other-data.npz": (np.eye(7)[faces.y], "0" * 64, "another training file"),
        "short.npz": (np.eye(7)[faces.y[:-1]], faces.sha256, "shape"),
        "not-probs.npz": (np.full((len(faces), 7), 0.5), faces.sha256, "probabilities"),
    }
    for name, (scores, sha, message) in bad.items():
        np.savez(tmp_path / name, scores=scores, train_sha256=sha)
        with pytest.raises(ConfigError, match=message):
            train(dataclasses.replace(cfg, teacher=str(tmp_path / name)), tmp_path / name[:-4],
                  resume=False, command=name)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match="not a scores file"):
        train(dataclasses.replace(cfg, teacher=str(tmp_path / "junk.npz")), tmp_path / "junk",
              resume=False, command="junk")


def test_consistent_distillation_loss_is_the_fixed_one_on_the_same_scores() -> None:
    import keras

    from confbot.modeling.distill import ConsistentDistillation, student_accuracy

    rng = np.random.default_rng(0)
    y = rng.integers(0, 7, 16)
    student = rng.dirichlet(np.ones(7), 16).astype(np.float32)
    teacher = rng.dirichlet(np.ones(7), 16).astype(np.float32)
    onehot = np.eye(7, dtype=np.float32)[y]
    loss = ConsistentDistillation(0.7, 2.0, 0.1)
    got = keras.ops.convert_to_numpy(loss(onehot, np.concatenate([student, teacher], 1)))
    fixed = keras.losses.CategoricalCrossentropy(label_smoothing=0.1)(
        distill_targets(y, teacher, 0.7, 2.0), student)
    assert float(got) == pytest.approx(float(keras.ops.convert_to_numpy(fixed)), rel=1e-5)
    # The loss reaches the student's scores only: the teacher's half is held still.
    both = keras.ops.convert_to_tensor(np.concatenate([student, teacher], 1))
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch(both)
        value = loss(onehot, both)
    grad = tape.gradient(value, both).numpy()
    assert np.abs(grad[:, 7:]).max() == 0 and np.abs(grad[:, :7]).max() > 0
    hits = keras.ops.convert_to_numpy(student_accuracy(onehot, both))
    np.testing.assert_array_equal(hits, (student.argmax(1) == y).astype(np.float32))
    restored = ConsistentDistillation.from_config(loss.get_config())
    assert (restored.weight, restored.temperature, restored.label_smoothing) == (0.7, 2.0, 0.1)


def test_a_consistent_run_scores_each_augmented_face_with_the_frozen_teacher(
        tmp_path: Path) -> None:
    import keras

    from confbot.modeling.export import load_export
    from confbot.modeling.train import train

    train(_tiny_config(tmp_path, epochs=1), tmp_path / "t", resume=False, command="teacher")
    teacher = tmp_path / "t" / "export" / "emotion_cnn.json"
    cfg = _tiny_config(tmp_path, epochs=1, teacher=str(teacher), distill_weight=0.7,
                       distill_mode="consistent",
                       arch={"widths": [4, 6], "convs_per_stage": 1, "head_units": 8,
                             "crop_size": 40})
    run = tmp_path / "student"
    train(cfg, run, resume=False, command="student")
    state = json.loads((run / "run.json").read_text())
    loaded = load_export(teacher)
    assert state["teacher"]["sha256"] == loaded.weights_sha256
    assert state["teacher"]["mode"] == "consistent"
    assert 0 <= state["teacher"]["train_accuracy"] <= 1
    assert len(_history(run)) == 1 and float(_history(run)[0]["accuracy"]) >= 0
    # The run's model outputs the student's scores and the teacher's on the same face; the
    # teacher's are the exported teacher's own (it did not train), the student's the export's.
    model = keras.models.load_model(run / "last.keras")
    faces = np.random.default_rng(3).random((5, 48, 48, 1)).astype(np.float32)
    out = model.predict(faces, verbose=0)
    assert out.shape == (5, 14)
    crops = faces[:, 4:44, 4:44]
    np.testing.assert_allclose(out[:, 7:], loaded.backbone.predict(crops, verbose=0), atol=1e-5)
    np.testing.assert_allclose(out[:, :7], model.get_layer("backbone").predict(crops, verbose=0),
                               atol=1e-6)

    train(dataclasses.replace(cfg, epochs=2), run, resume=True, command="resumed")
    assert [r["epoch"] for r in _history(run)] == ["1", "2"]
    assert (run / "export" / "emotion_cnn.json").exists()
    with pytest.raises(ConfigError, match="--resume: distill_weight changed"):
        train(dataclasses.replace(cfg, epochs=3, distill_weight=0.5), run, resume=True,
              command="x")
    with pytest.raises(ConfigError, match="--resume: distill_mode changed"):
        train(dataclasses.replace(cfg, epochs=3, distill_mode="fixed"), run, resume=True,
              command="x")
    other_crop = dataclasses.replace(cfg, arch=dataclasses.replace(cfg.arch, crop_size=48))
    with pytest.raises(ConfigError, match="they must see the same view"):
        train(other_crop, tmp_path / "crop", resume=False, command="x")
    no_weights = tmp_path / "no-weights.json"
    no_weights.write_text(teacher.read_text())
    with pytest.raises(ConfigError, match=r"teacher: .*float32 weights"):
        train(dataclasses.replace(cfg, teacher=str(no_weights)), tmp_path / "nw", resume=False,
              command="x")


def test_model_scores_writes_a_teacher_file_that_train_accepts(tmp_path: Path) -> None:
    from confbot.modeling.train import ensemble_scores, load_scores_file, train

    manifests = []
    for name, seed in (("t1", 1), ("t2", 2)):
        train(_tiny_config(tmp_path, seed=seed, epochs=1), tmp_path / name, resume=False,
              command=name)
        manifests.append(tmp_path / name / "export" / "emotion_cnn.json")
    cfg = _tiny_config(tmp_path, epochs=1)
    faces = load_face_set(Path(cfg.train_data))

    def scores_cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "confbot", "model", "scores", *args],
                              capture_output=True, text=True, timeout=120)

    out = tmp_path / "teacher.npz"
    res = scores_cli(cfg.train_data, "--model", str(manifests[0]), "--model", str(manifests[1]),
                     "--tta", "flip", "--out", str(out))
    assert res.returncode == 0, res.stderr
    # each teacher's progress on stderr (three teachers took 54 minutes on a Zen 1 EPYC); stdout is JSON only
    for manifest in manifests:
        assert re.search(rf"teacher {re.escape(str(manifest))} \(flip\).*{len(faces)}/{len(faces)}",
                         res.stderr), res.stderr
    printed = json.loads(res.stdout)
    saved, _ = load_scores_file(out, faces)
    expected, shas = ensemble_scores(manifests, "flip", faces)
    assert np.allclose(saved, expected, atol=1e-6)  # the two models averaged, face by face
    assert printed["accuracy"] == round(float((saved.argmax(1) == faces.y).mean()), 4)
    with np.load(out) as data:
        assert list(data["model_sha256"]) == shas
    train(dataclasses.replace(cfg, teacher=str(out)), tmp_path / "student", resume=False,
          command="student")
    state = json.loads((tmp_path / "student" / "run.json").read_text())
    assert state["teacher"]["train_accuracy"] == printed["accuracy"]

    for args, message in [
        (["--model", str(manifests[0]), "--out", str(tmp_path / "t.txt")], "must end in .npz"),
        (["--model", str(manifests[0]), "--tta", "all", "--out", str(out)], "--tta must be one of"),
        (["--model", str(tmp_path / "none.json"), "--out", str(out)], "not found"),
    ]:
        res = scores_cli(cfg.train_data, *args)
        assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr
    # A teacher file made for the training faces cannot score other faces.
    res = scores_cli(cfg.val_data, "--model", str(out), "--out", str(tmp_path / "v.npz"))
    assert res.returncode == 2 and "another training file" in res.stderr
    assert load_scores_file(out, faces)[0].shape == (len(faces), 7)  # left as it was


def test_a_failed_file_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    from confbot.modeling.data import replace_file

    path = tmp_path / "run.json"
    path.write_text("old")

    def half_written(tmp: Path) -> None:
        tmp.write_text("partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        replace_file(path, half_written)
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]
    replace_file(path, lambda tmp: tmp.write_text("new"))
    assert path.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]


def test_precise_bn_sets_each_batch_norm_to_its_inputs_statistics(tmp_path: Path) -> None:
    import keras

    from confbot.modeling.architecture import build_backbone
    from confbot.modeling.recalibrate import recalibrate_export
    from confbot.modeling.train import train
    from confbot.vision import load_classifier

    cfg = _tiny_config(tmp_path, epochs=1, export_quantize="int8")
    train(cfg, tmp_path / "run", resume=False, command="run")
    manifest = tmp_path / "run" / "export" / "emotion_cnn.json"
    faces = load_face_set(Path(cfg.train_data))
    out = tmp_path / "precise"
    recalibrate_export(manifest, faces, out)

    recorded = json.loads((out / "emotion_cnn.json").read_text())
    assert recorded["precise_bn"]["views"] == 2 * len(faces)
    assert recorded["precise_bn"]["train_sha256"] == faces.sha256
    assert recorded["precise_bn"]["from_weights_sha256"] == json.loads(
        manifest.read_text())["weights"]["sha256"]
    assert recorded["training"] == json.loads(manifest.read_text())["training"]
    assert recorded["quantization"] == "int8"
    before, after = build_backbone(cfg.arch), build_backbone(cfg.arch)
    before.load_weights(tmp_path / "run" / "export" / "emotion_cnn.weights.h5")
    after.load_weights(out / "emotion_cnn.weights.h5")
    # The first batch norm reads the first convolution, whose weights did not change: its new
    # statistics are those of that convolution's output over the centre crops and mirrors of
    # the faces as the classifier sees them, moved to the training faces' level and contrast.
    assert recorded["input"]["standardize"] == dict(zip(("mean", "sd"), face_statistics(faces.x),
                                                        strict=True))
    seen = standardize_faces(faces.x, *face_statistics(faces.x))
    crop = (seen[:, 4:44, 4:44] / 255)[..., None]
    views = np.concatenate([crop, crop[:, :, ::-1]])
    conv = keras.Model(after.input, after.get_layer("s0_conv0").output)
    f = np.asarray(conv(views), np.float64).reshape(-1, cfg.arch.widths[0])
    _, _, mean, var = after.get_layer("s0_bn0").get_weights()
    assert np.allclose(mean, f.mean(axis=0), atol=1e-4) and np.allclose(var, f.var(axis=0), rtol=1e-3)
    assert not np.allclose(mean, before.get_layer("s0_bn0").get_weights()[2], atol=1e-4)
    for a, b in zip(before.get_layer("s0_conv0").get_weights(),
                    after.get_layer("s0_conv0").get_weights(), strict=True):
        assert np.array_equal(a, b)  # only statistics change
    scores = load_classifier(out / "emotion_cnn.json", threads=1, tta="flip").classify(faces.x[:8])
    assert np.allclose(np.asarray(scores).sum(axis=1), 1.0, atol=1e-4)

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "junk.json").write_text("{}")
    altered = json.loads(manifest.read_text())
    altered["weights"]["sha256"] = "0" * 64
    (broken / "altered.json").write_text(json.dumps(altered))
    (broken / "emotion_cnn.weights.h5").write_bytes(b"x")
    for name, message in [("junk.json", "not an export manifest"),
                          ("altered.json", "does not match the sha256")]:
        with pytest.raises(ModelError, match=message):
            recalibrate_export(broken / name, faces, tmp_path / "no")
    res = subprocess.run([sys.executable, "-m", "confbot", "model", "precise-bn",
                          str(broken / "junk.json"), "--out", str(tmp_path / "no"),
                          "--train-data", cfg.train_data], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 2 and "not an export manifest" in res.stderr
    assert "Traceback" not in res.stderr

    # On a sample of the faces: the sample's statistics, and the count recorded.
    sampled = tmp_path / "sampled"
    res = subprocess.run([sys.executable, "-m", "confbot", "model", "precise-bn", str(manifest),
                          "--out", str(sampled), "--train-data", cfg.train_data,
                          "--faces", "50"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert json.loads((sampled / "emotion_cnn.json").read_text())["precise_bn"]["views"] == 100
    pick = np.sort(np.random.default_rng(1337).choice(len(faces), 50, replace=False))
    sample = np.concatenate([crop[pick], crop[pick][:, :, ::-1]])
    f = np.asarray(conv(sample), np.float64).reshape(-1, cfg.arch.widths[0])
    after.load_weights(sampled / "emotion_cnn.weights.h5")
    assert np.allclose(after.get_layer("s0_bn0").get_weights()[2], f.mean(axis=0), atol=1e-4)
    with pytest.raises(ModelError, match="faces must be 0"):
        recalibrate_export(manifest, faces, tmp_path / "no", faces=-1)
    # With small faces in the mix, as training's low_res_prob: recorded, and statistics moved.
    mixed = tmp_path / "mixed"
    recalibrate_export(manifest, faces, mixed, low_res_prob=1.0)
    assert json.loads((mixed / "emotion_cnn.json").read_text())["precise_bn"]["low_res_prob"] == 1.0
    after.load_weights(mixed / "emotion_cnn.weights.h5")
    assert not np.allclose(after.get_layer("s0_bn0").get_weights()[3], var, rtol=1e-3)
    res = subprocess.run([sys.executable, "-m", "confbot", "model", "precise-bn", str(manifest),
                          "--out", str(tmp_path / "no"), "--train-data", cfg.train_data,
                          "--low-res-prob", "1.5"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "low_res_prob must be from 0 to 1" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "no").exists()


def test_bn_views_shrink_the_share_of_faces_training_shrinks() -> None:
    from confbot.modeling.architecture import LOW_RES_SIDES
    from confbot.modeling.conditions import parse_condition
    from confbot.modeling.recalibrate import bn_views

    rng = np.random.default_rng(3)
    faces = rng.integers(0, 256, (400, 48, 48), dtype=np.uint8)
    plain = bn_views(faces, 40)
    assert plain.shape == (800, 40, 40, 1)
    assert np.allclose(plain[:400, :, :, 0], faces[:, 4:44, 4:44] / 255.0)
    assert np.array_equal(plain[400:], plain[:400, :, ::-1])
    mixed = bn_views(faces, 40, low_res_prob=0.3, seed=5)
    assert np.array_equal(mixed, bn_views(faces, 40, low_res_prob=0.3, seed=5))
    changed = ~np.all(np.isclose(mixed[:400], plain[:400]), axis=(1, 2, 3))
    assert 0.2 < changed.mean() < 0.4  # noise faces: shrinking changes every one it touches
    def shrunk(i: int, side: int) -> np.ndarray:
        small = parse_condition(f"small={side}").apply(faces[i:i + 1])
        return small[0, 4:44, 4:44, None] / 255.0

    sides = _shrunk_sides(mixed, np.flatnonzero(changed), shrunk)
    assert sides == set(LOW_RES_SIDES)
    level = bn_views(faces, 40, standardize=(100.0, 30.0))
    whole = standardize_faces(faces, 100.0, 30.0)
    assert np.allclose(level[:400, :, :, 0], whole[:, 4:44, 4:44] / 255.0)
    for bad in (-0.1, 1.01):
        with pytest.raises(ModelError, match="low_res_prob must be from 0 to 1"):
            bn_views(faces, 40, low_res_prob=bad)


def test_model_average_averages_exports_of_one_network_and_refuses_others(tmp_path: Path) -> None:
    from confbot.modeling.architecture import build_backbone
    from confbot.modeling.train import train

    cfg = _tiny_config(tmp_path, epochs=1)
    runs = []
    for seed in (1, 2):
        train(dataclasses.replace(cfg, seed=seed), tmp_path / f"run{seed}", resume=False,
              command=f"run{seed}")
        runs.append(tmp_path / f"run{seed}" / "export" / "emotion_cnn.json")

    def average(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "confbot", "model", "average", *args,
                               "--train-data", cfg.train_data], capture_output=True, text=True,
                              timeout=300)

    out = tmp_path / "soup"
    res = average(str(runs[0]), str(runs[1]), "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "the average of 2 networks" in res.stdout
    nets = []
    for weights in [r.parent / "emotion_cnn.weights.h5" for r in runs] + [out / "emotion_cnn.weights.h5"]:
        net = build_backbone(dataclasses.replace(cfg.arch, dropout=0.0))
        net.load_weights(weights)
        nets.append(net)
    recorded = json.loads((out / "emotion_cnn.json").read_text())
    assert recorded["averaged"]["weights_sha256"] == [
        json.loads(r.read_text())["weights"]["sha256"] for r in runs]
    # Every weight is the mean of the two, except the batch norms' statistics, re-estimated.
    for a, b, mean in zip(*(n.weights for n in nets), strict=True):
        expected = (np.asarray(a) + np.asarray(b)) / 2
        if "moving" in mean.path:
            assert not np.allclose(np.asarray(mean), expected, atol=1e-4), mean.path
        else:
            assert np.allclose(np.asarray(mean), expected, atol=1e-6), mean.path
    assert recorded["precise_bn"]["views"] == 2 * len(load_face_set(Path(cfg.train_data)))
    assert "from_weights_sha256" not in recorded["precise_bn"]  # the averaged list names them

    wider = _tiny_config(tmp_path, epochs=1, arch={"widths": [8, 8], "convs_per_stage": 1,
                                                    "head_units": 8, "crop_size": 40})
    train(wider, tmp_path / "wider", resume=False, command="wider")
    for args, message in [
        ([str(runs[0])], "at least two exports"),
        ([str(runs[0]), str(tmp_path / "wider" / "export" / "emotion_cnn.json")],
         "cannot average it with"),
        ([str(runs[0]), str(tmp_path / "none.json")], "not an export manifest"),
    ]:
        res = average(*args, "--out", str(tmp_path / "no"))
        assert res.returncode == 2 and message in res.stderr, res.stderr
        assert "Traceback" not in res.stderr and not (tmp_path / "no").exists()


def test_resume_refuses_changed_training_data(tmp_path: Path) -> None:
    from confbot.modeling.train import train

    run = tmp_path / "run"
    cfg = _tiny_config(tmp_path, epochs=1)
    train(cfg, run, resume=False, command="first")
    _synthetic(Path(cfg.train_data), 224, seed=99)
    with pytest.raises(ConfigError, match="training data changed"):
        train(dataclasses.replace(cfg, epochs=2), run, resume=True, command="resumed")


def test_budget_stops_cleanly_with_the_best_epoch_exported(tmp_path: Path) -> None:
    from confbot.modeling.train import train

    run = tmp_path / "run"
    train(_tiny_config(tmp_path, epochs=50, budget_minutes=0.001), run, resume=False, command="b")
    state = json.loads((run / "run.json").read_text())
    assert state["epochs_done"] == 1
    assert (run / "export" / "emotion_cnn.tflite").is_file()


def test_a_schedule_fitted_to_the_budget_runs_down_to_its_floor(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import confbot.modeling.train as train_mod

    ticks = iter(range(0, 10**6, 10))  # each reading of the clock is 10 s after the last
    monkeypatch.setattr(train_mod, "_clock", lambda: float(next(ticks)))
    run = tmp_path / "run"
    cfg = _tiny_config(tmp_path, epochs=50, budget_minutes=3.0, fit_schedule_to_budget=True,
                       export_at_end=False)
    train_mod.train(cfg, run, resume=False, command="fit")
    state = json.loads((run / "run.json").read_text())
    assert 2 <= state["planned_epochs"] < 50
    assert state["epochs_done"] == state["planned_epochs"]
    rows = _history(run)
    assert len(rows) == state["planned_epochs"]
    assert float(rows[-1]["lr"]) < 2 * cfg.min_lr  # its last step is the floor
    assert not (run / "export").exists()  # export_at_end = false
    # The same config without fitting stops at the budget part-way down the schedule.
    ticks = iter(range(0, 10**6, 10))
    plain = tmp_path / "plain"
    train_mod.train(dataclasses.replace(cfg, fit_schedule_to_budget=False), plain,
                    resume=False, command="plain")
    assert "planned_epochs" not in json.loads((plain / "run.json").read_text())
    assert float(_history(plain)[-1]["lr"]) > 10 * cfg.min_lr


def test_a_fitted_schedule_grows_back_after_a_slow_epoch_and_resumes_past_its_plan(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import confbot.modeling.train as train_mod

    class Clock:
        """10 s between readings, but epoch 3's end waits 80 s (a machine busy elsewhere)."""

        def __init__(self) -> None:
            self.now, self.readings = 0.0, 0

        def __call__(self) -> float:
            self.readings += 1
            # Readings: start, then per epoch: begin, end of training, after the checkpoint.
            self.now += 80.0 if self.readings == 9 else 10.0
            return self.now

    monkeypatch.setattr(train_mod, "_clock", Clock())
    run = tmp_path / "run"
    cfg = _tiny_config(tmp_path, epochs=50, budget_minutes=5.0, fit_schedule_to_budget=True,
                       export_at_end=False)
    train_mod.train(cfg, run, resume=False, command="fit")
    out = capsys.readouterr().out
    plans = [int(m) for m in re.findall(r"it ends at epoch (\d+)", out)]
    # 30 s epochs fit 10 in 300 s; after the slow one the median of epochs 2-3 is 65 s (5);
    # one more 30 s epoch brings the median back to 30 s, and two more epochs (7).
    assert plans == [10, 5, 7], out
    state = json.loads((run / "run.json").read_text())
    assert state["epochs_done"] == state["planned_epochs"] == plans[-1]
    rows = _history(run)
    assert float(rows[-1]["lr"]) < 2 * cfg.min_lr  # still ends at the floor
    # Resumed without fitting and with more epochs, it trains on: the stored plan of a fitted
    # run does not cap a later one.
    more = state["epochs_done"] + 2
    train_mod.train(dataclasses.replace(cfg, epochs=more, fit_schedule_to_budget=False,
                                        budget_minutes=0.0), run, resume=True, command="more")
    assert json.loads((run / "run.json").read_text())["epochs_done"] == more


def _write_config(cfg: TrainConfig, path: Path) -> Path:
    """`cfg` as a training TOML (without a teacher), for a run in another process."""
    raw = dataclasses.asdict(cfg)
    arch = raw.pop("arch")
    lines = [f"{k} = {json.dumps(v)}" for k, v in raw.items() if k != "teacher"]
    lines += ["[arch]"] + [f"{k} = {json.dumps(list(v) if isinstance(v, tuple) else v)}"
                           for k, v in arch.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _train_on_jax(config: Path, run: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "confbot", "model", "train", "--config",
                           str(config), "--out", str(run), *extra], capture_output=True,
                          text=True, timeout=600, env={**os.environ, "KERAS_BACKEND": "jax"})


def _train_and_resume_on_jax(config: Path, run: Path, *, epochs: int) -> list[dict[str, str]]:
    """Train `config` on JAX, resume it to `epochs` in a new process; the run's history."""
    for extra in ((), ("--resume", "--epochs", str(epochs))):
        res = _train_on_jax(config, run, *extra)
        assert res.returncode == 0, res.stderr[-3000:]
    return _history(run)


def test_weight_averaging_and_mixing_run_and_resume_on_the_jax_backend(tmp_path: Path) -> None:
    """The GPU path's backend with both on: the mixed batches' epoch comes from the trainer
    (JAX's build step begins an extra epoch on a dataset) and the average resumes."""
    pytest.importorskip("jax", reason="jax is not installed (the test extra installs it)")
    cfg = _tiny_config(tmp_path, export_at_end=False, epochs=2, warmup_epochs=1,
                       swa_start=2, swa_lr=1e-3, swa_bn_faces=64, mixing="cutmix",
                       mix_prob=1.0)
    config = _write_config(cfg, tmp_path / "jax.toml")
    run = tmp_path / "run"
    rows = _train_and_resume_on_jax(config, run, epochs=3)
    assert [r["averaged"] for r in rows] == ["0", "1", "2"]
    assert all(r["raw_val_accuracy"] for r in rows[1:])
    state = json.loads((run / "run.json").read_text())
    assert state["swa_count"] == 2 and (run / state["swa_file"]).exists()
    assert all(math.isfinite(float(r["loss"])) for r in rows)


def test_the_teacher_sees_the_students_view_with_its_sharp_detail() -> None:
    """Same rotation, zoom and crop for both; only the student's face is given low resolution."""
    import keras

    from confbot.modeling.architecture import build_backbone, build_training_model

    arch = ArchitectureConfig(widths=(4, 8), convs_per_stage=1, head_units=8)
    faces = np.random.default_rng(5).random((16, 48, 48, 1)).astype(np.float32)
    teacher = build_backbone(arch, name="teacher0")
    views = {}
    for share in (1e-9, 1.0):
        model = build_training_model(build_backbone(arch), arch, seed=3, erase_prob=0.0,
                                     low_res_prob=share, teachers=[teacher])
        probe = keras.Model(model.input, [model.get_layer("student_view").output,
                                          model.get_layer("teacher_view").output])
        views[share] = [keras.ops.convert_to_numpy(v) for v in probe(faces, training=True)]
    student, sharp = views[1e-9]
    assert student.shape == sharp.shape == (16, 40, 40, 1)
    np.testing.assert_array_equal(student, sharp)  # no face shrunk: one view
    assert np.abs(sharp - faces[:, 4:44, 4:44]).max() > 0.1  # ... and it was augmented
    student, sharp = views[1.0]

    def detail(v: np.ndarray) -> float:
        return float(np.abs(np.diff(v, axis=2)).mean())

    assert detail(student) < 0.6 * detail(sharp)
    # The same geometry: the shrunk view is the sharp one, blurred, not another crop of it.
    assert np.corrcoef(student.ravel(), sharp.ravel())[0, 1] > 0.5
    assert np.corrcoef(student.ravel(), np.roll(sharp, 3, axis=2).ravel())[0, 1] < 0.3


def test_consistent_distillation_runs_and_resumes_on_the_jax_backend(tmp_path: Path) -> None:
    """The GPU path's backend with the teacher in the training graph."""
    pytest.importorskip("jax", reason="jax is not installed (the test extra installs it)")
    from confbot.modeling.train import train

    train(_tiny_config(tmp_path, epochs=1), tmp_path / "t", resume=False, command="teacher")
    teacher = tmp_path / "t" / "export" / "emotion_cnn.json"
    cfg = _tiny_config(tmp_path, export_at_end=False, epochs=1, distill_mode="consistent",
                       teacher=str(teacher), distill_weight=0.7)
    config = _write_config(cfg, tmp_path / "jax.toml")
    config.write_text(f'teacher = "{teacher}"\n' + config.read_text())  # _write_config leaves it
    run = tmp_path / "run"
    rows = _train_and_resume_on_jax(config, run, epochs=2)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert all(math.isfinite(float(r["loss"])) and 0 <= float(r["accuracy"]) <= 1 for r in rows)
    assert json.loads((run / "run.json").read_text())["teacher"]["mode"] == "consistent"


def test_training_runs_on_the_jax_backend_and_exports_on_tensorflow(tmp_path: Path) -> None:
    """GPU machines train with Keras on JAX; the weights then export here, on TensorFlow."""
    pytest.importorskip("jax", reason="jax is not installed (the test extra installs it)")
    import tomllib

    from confbot.modeling.export import export_run

    # Batches of 8: 28 steps an epoch, so the rate is set at steps 0 and 16 of each.
    cfg = _tiny_config(tmp_path, export_at_end=False, epochs=2, batch_size=8)
    assert math.ceil(224 / cfg.batch_size) > LR_EVERY_JAX
    config = _write_config(cfg, tmp_path / "jax.toml")
    assert tomllib.loads(config.read_text())["export_at_end"] is False
    run = tmp_path / "run"
    res = _train_on_jax(config, run)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "export it with `confbot model export" in res.stdout
    state = json.loads((run / "run.json").read_text())
    assert state["epochs_done"] == 2 and not (run / "export").exists()
    # The learning rate reached the optimizer on JAX, where the training state lives outside
    # the variables during an epoch: the checkpoint holds the last rate set.
    probe = ("import keras, sys; m = keras.models.load_model(sys.argv[1]); "
             "print(float(m.optimizer.learning_rate), int(m.optimizer.iterations))")
    res = subprocess.run([sys.executable, "-c", probe, str(run / "last.keras")],
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "KERAS_BACKEND": "jax"})
    assert res.returncode == 0, res.stderr[-3000:]
    lr, steps = res.stdout.split()
    steps_per_epoch = math.ceil(224 / cfg.batch_size)
    assert int(steps) == 2 * steps_per_epoch
    # set at the epoch's steps 0, LR_EVERY_JAX, ...: the last one in epoch 2
    last_set = steps_per_epoch + (steps_per_epoch - 1) // LR_EVERY_JAX * LR_EVERY_JAX
    assert float(lr) == pytest.approx(lr_at(last_set, steps_per_epoch, cfg), rel=1e-5)
    check = export_run(run, tmp_path / "export", quantize="float32")
    assert check.top1_agreement >= 0.99


def test_int8_export_is_calibrated_checked_and_loads_in_the_product(tmp_path: Path) -> None:
    from confbot.modeling.export import export_run
    from confbot.modeling.train import train
    from confbot.vision import load_classifier

    run = tmp_path / "run"
    cfg = _tiny_config(tmp_path, export_quantize="int8")
    train(cfg, run, resume=False, command="int8")
    manifest = json.loads((run / "export" / "emotion_cnn.json").read_text())
    assert manifest["quantization"] == "int8"

    def dtypes(path: Path) -> set[str]:
        from ai_edge_litert.interpreter import Interpreter

        return {d["dtype"].__name__ for d in Interpreter(model_path=str(path)).get_tensor_details()}

    check = export_run(run, tmp_path / "f32", quantize="float32")
    assert check.top1_agreement >= 0.99
    assert json.loads((tmp_path / "f32" / "emotion_cnn.json").read_text())["quantization"] == "float32"
    assert "int8" in dtypes(run / "export" / "emotion_cnn.tflite")
    assert "int8" not in dtypes(tmp_path / "f32" / "emotion_cnn.tflite")

    val = load_face_set(Path(cfg.val_data))
    int8 = np.asarray(load_classifier(run / "export" / "emotion_cnn.json", threads=1,
                                      tta="flip").classify(val.x[:16]))
    f32 = np.asarray(load_classifier(tmp_path / "f32" / "emotion_cnn.json", threads=1,
                                     tta="flip").classify(val.x[:16]))
    assert int8.shape == (16, 7)
    assert np.abs(int8 - f32).max() < 0.5
    with pytest.raises(ModelError, match="quantize must be one of"):
        export_run(run, tmp_path / "x", quantize="int4")


def test_export_refuses_a_directory_that_is_not_a_run(tmp_path: Path) -> None:
    from confbot.modeling.export import convert_keras_file, export_run

    with pytest.raises(ModelError, match="not a training run"):
        export_run(tmp_path, tmp_path / "out")
    (tmp_path / "model.h5").write_bytes(b"\x89HDF\r\n junk")
    with pytest.raises(ModelError, match="not a loadable Keras model"):
        convert_keras_file(tmp_path / "model.h5", tmp_path / "out", name="x", scale=1.0, offset=0.0)


def test_lr_schedule_has_no_gaps_at_the_warmup_boundary() -> None:
    cfg = TrainConfig(epochs=5, warmup_epochs=1, peak_lr=2e-3, min_lr=1e-5)
    before, after = lr_at(9, 10, cfg), lr_at(10, 10, cfg)
    assert math.isclose(before, after, rel_tol=1e-9)


def test_paired_comparison_counts_disagreements_and_tests_them_exactly() -> None:
    from confbot.modeling.evaluate import compare_predictions

    y = np.zeros(30, np.int64)
    a = np.zeros(30, np.int64)
    b = np.zeros(30, np.int64)
    b[:10] = 1           # B wrong on 10 faces A gets right
    a[10:12] = 2         # A wrong on 2 faces B gets right
    a[12] = b[12] = 3    # both wrong: carries no information
    result = compare_predictions(a, b, y)
    assert (result.only_a, result.only_b) == (10, 2)
    assert result.accuracy_a == pytest.approx(27 / 30) and result.accuracy_b == pytest.approx(19 / 30)
    # two-sided exact binomial: 2 * P(X <= 2), X ~ Bin(12, 1/2) = 2 * 79 / 4096
    assert result.p_value == pytest.approx(2 * 79 / 4096)
    same = compare_predictions(a, a, y)
    assert (same.only_a, same.only_b, same.p_value) == (0, 0, 1.0)
    with pytest.raises(ValueError, match="differ in shape"):
        compare_predictions(a, b[:5], y)


def test_the_timing_classifies_a_shuffled_sample_of_the_faces_not_their_head() -> None:
    from confbot.modeling.evaluate import time_per_face

    class Recorder:
        """Stands in for the classifier: records which faces each call got."""

        def __init__(self) -> None:
            self.calls: list[list[int]] = []

        def classify(self, faces: np.ndarray) -> np.ndarray:
            self.calls.append([int(f[0, 0]) for f in faces])
            return np.zeros((len(faces), 7), np.float32)

    faces = np.arange(1000, dtype=np.float32)[:, None, None] * np.ones((1, 4, 4), np.float32)
    recorder = Recorder()
    assert time_per_face(recorder, faces, 8, min_seconds=0) > 0  # type: ignore[arg-type]
    timed = recorder.calls[1:]  # after the warm-up call
    assert len(timed) == 20 and all(len(c) == 8 for c in timed)
    seen = [i for c in timed for i in c]
    assert len(set(seen)) == len(seen) == 160  # successive batches, no face twice
    assert max(seen) > 500 and sorted(seen) != list(range(160))  # spread over the set
    again = Recorder()
    time_per_face(again, faces, 8, min_seconds=0)  # type: ignore[arg-type]
    assert again.calls[1:] == timed  # the same order every time: comparable runs


def test_network_input_is_what_the_classifier_hands_the_network() -> None:
    from confbot.modeling.data import network_input

    faces = np.random.default_rng(4).integers(0, 256, (6, 48, 48), dtype=np.uint8)
    faces[0] //= 4  # a dark face, which standardizing moves
    assert np.allclose(network_input(faces, None), faces[..., None] / 255.0)
    moved = network_input(faces, (131.0, 77.5))
    assert moved.shape == (6, 48, 48, 1)
    assert np.allclose(moved[..., 0], standardize_faces(faces, 131.0, 77.5) / 255.0)
    assert not np.allclose(moved[0], faces[0, ..., None] / 255.0, atol=0.05)


@pytest.mark.parametrize("standardize", [None, (131.0, 77.5)])
def test_network_input_matches_the_classifiers_own_preprocessing(
        standardize: tuple[float, float] | None) -> None:
    # data.network_input mirrors EmotionClassifier.classify for the exports' scale of 1/255:
    # what the classifier really sets as the network's input is caught here, so a change to
    # either one that the other does not follow fails.
    from confbot.modeling.data import network_input
    from confbot.vision import load_classifier
    from face_core.classify import EmotionClassifier

    shipped = load_classifier(REPO / "models" / "emotion_cnn_lite.json")
    manifest = dataclasses.replace(shipped.manifest, scale=1 / 255, offset=0.0,
                                   standardize=standardize)
    content = (REPO / "models" / shipped.manifest.file).read_bytes()
    seen: list[np.ndarray] = []

    class Recording(EmotionClassifier):
        def _run(self, x: np.ndarray) -> np.ndarray:
            seen.append(x.copy())
            return np.full((len(x), 7), 1 / 7, np.float32)

    faces = np.random.default_rng(5).integers(0, 256, (5, 48, 48), dtype=np.uint8)
    faces[0] //= 4
    Recording(content, manifest).classify(faces)
    assert len(seen) == 1 and seen[0].shape == (5, 48, 48, 1)
    assert np.allclose(seen[0], network_input(faces, standardize), rtol=0, atol=1e-6)
