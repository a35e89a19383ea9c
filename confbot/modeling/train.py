"""`confbot model train`: reproducible training of the emotion CNN.

It runs on whichever Keras backend is configured: TensorFlow on the CPU by default, or JAX
(`KERAS_BACKEND=jax`) on a GPU machine, where TensorFlow need not be installed
(`export_at_end = false`; export afterwards where it is).

A run lives in one directory: the resolved config, a checkpoint after every epoch
(`last.keras`, with optimizer state, so `--resume` continues exactly), the best weights by
validation accuracy (`best.weights.h5`), a CSV history and `run.json` (seed, data hashes,
command, epochs, wall time). When the run ends, by finishing its epochs or by hitting its
wall-clock budget, the best weights are exported to the product's runtime in `export/`
(`confbot model export RUN --out models` does the same into `models/`).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import sys
import time
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, get_type_hints

import numpy as np

from confbot.errors import ConfigError, ModelError
from confbot.hardware import CpuInfo, cpu_info
from confbot.modeling.architecture import ArchitectureConfig, dtype_policy, kept_dtype_policy, policy_name
from confbot.modeling.averaging import WeightAverage, averaged_weights, prune_averages
from confbot.modeling.data import (
    FaceSet,
    file_sha256,
    load_face_set,
    network_input,
    replace_file,
    sample_faces,
)
from confbot.modeling.mixing import MIXINGS, mixed_batches
from face_core.classify import TTA_VIEWS
from face_core.emotions import EMOTIONS

log = logging.getLogger(__name__)


OPTIMIZERS = ("adamw", "sgd")

# Settings a resumed run cannot change: last.keras was saved with them built in (the layers,
# the augmentation layers and their seed, the compiled loss, the optimizer and its state).
HELD_BY_CHECKPOINT = ("arch", "seed", "optimizer", "momentum", "weight_decay", "ema_momentum",
                      "label_smoothing", "erase_prob", "shift_pixels", "zoom_in", "zoom_out",
                      "low_res_prob", "mixed_bfloat16", "distill_mode")
# Held as well when the teachers run in the training graph: the compiled loss holds them.
HELD_BY_CONSISTENT_DISTILLATION = ("distill_weight", "distill_temperature")
DISTILL_MODES = ("fixed", "consistent")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Every knob of a training run; `training.toml` documents each one."""

    train_data: str = "../shared/datasets/fer2013/training.npz"
    val_data: str = "../shared/datasets/fer2013/publictest.npz"
    seed: int = 1337
    epochs: int = 80
    warmup_epochs: int = 3
    batch_size: int = 128
    peak_lr: float = 2e-3
    min_lr: float = 1e-5
    # "adamw", or "sgd" with Nesterov momentum `momentum` (the optimizer of Khaireddin and
    # Chen's 73.28% VGG on FER2013). Keras applies weight decay as weights -= lr *
    # weight_decay * weights each step, for both: with AdamW's small rates a decay of 5e-4
    # is far weaker than the same figure is with SGD's.
    optimizer: str = "adamw"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    erase_prob: float = 0.5
    # Random shift for a network that sees the whole face ([arch] crop_size = input_size);
    # a smaller crop is shifted by where the random crop falls instead.
    shift_pixels: int = 4
    # Random zoom, as shares of the face's side: in by up to zoom_in (a tighter framing, as a
    # detector box smaller than the face gives), out by up to zoom_out (a looser one).
    zoom_in: float = 0.1
    zoom_out: float = 0.1
    # Share of faces shrunk to a few pixels a side and scaled back (`RandomLowResolution`):
    # the detail small, soft faces in a call lack (`confbot model robustness` measures it).
    low_res_prob: float = 0.0
    # Class weight = (mean count / class count) ** class_weight_power: 0 ignores imbalance,
    # 1 fully balances it. A small power lifts `disgust` (1.5% of Training) without
    # giving up overall accuracy.
    class_weight_power: float = 0.3
    # Train in mixed bfloat16 (validation, export and the product stay float32). None ("auto"
    # in TOML) decides by the hardware: bf16 where the CPU has bf16 arithmetic (AVX512-BF16,
    # AMX, Arm's BF16), float32 elsewhere, where emulated bf16 trains several times slower;
    # a resumed run keeps what it started with. The CPU decides even beside a GPU: set true
    # there (training-gpu.toml does).
    mixed_bfloat16: bool | None = None
    # An exponential moving average of the weights (Polyak averaging): each step the average
    # moves (1 - ema_momentum) of the way to the weights. 0 turns it off. When on, validation,
    # the best checkpoint and the export use the average; training goes on from the weights.
    ema_momentum: float = 0.0
    # Stochastic weight averaging (Izmailov et al., "Averaging Weights Leads to Wider Optima
    # and Better Generalization", 2018): the cosine decay ends at `swa_lr` when epoch
    # `swa_start` begins, the rate holds there, and the weights at the end of that epoch and
    # every later one are averaged equally. An average has no batch-norm statistics of its own,
    # so they are re-estimated (precise batch norm) on `swa_bn_faces` training faces before it
    # is validated. From `swa_start` on the average is what is validated and, if best, kept
    # (each epoch's own weights are validated for the history only). 0 turns it off.
    # The decay needs room: swa_start after the warm-up, swa_lr at most peak_lr, and no
    # budget-fitted schedule (a fitted end could fall before the averaging starts).
    swa_start: int = 0
    swa_lr: float = 0.0
    swa_bn_faces: int = 2048
    # Mixing pairs of training faces (`confbot.modeling.mixing`): "mixup" blends two faces,
    # "cutmix" pastes a box of one into the other, and their targets and class weights are
    # mixed in the same proportion, drawn from Beta(mix_alpha, mix_alpha). `mix_prob` is the
    # share of faces mixed. "none" trains on the faces as they are.
    mixing: str = "none"
    mix_prob: float = 0.5
    mix_alpha: float = 1.0
    budget_minutes: float = 0.0
    # With a budget: shorten the learning-rate schedule so it ends within the budget, measured
    # from the epochs run so far (the first, which compiles, not counted), instead of stopping
    # part-way down it. Never lengthens it beyond `epochs`.
    fit_schedule_to_budget: bool = False
    export_quantize: str = "float32"  # or "int8": what the run's `export/` holds
    export_at_end: bool = True  # false: leave best.weights.h5 for `confbot model export RUN`
    # Backbone weights to start from: a new schedule from a trained network, a warm restart,
    # instead of from random weights. Either an export's `emotion_cnn.weights.h5` (same [arch])
    # or its manifest `emotion_cnn.json`, whose recorded architecture may have other widths
    # than [arch]: the network is then widened without changing its scores, or pruned to the
    # channels that carry the most (see `resize`).
    init_weights: str = ""
    init_noise: float = 0.01  # symmetry-breaking noise on widened copies (x kernel std)
    # Distillation: a teacher whose scores on each training face are mixed into the targets:
    # (1 - distill_weight) * label + distill_weight * teacher scores, the scores first softened
    # by `distill_temperature` (p ** (1 / T), renormalised). A teacher is a LiteRT manifest
    # (e.g. models/emotion_cnn.json), scored here over its `teacher_tta` views, or a scores file
    # made elsewhere (see `load_scores_file`); a list of them is an ensemble whose scores are
    # averaged. Computed once per run.
    teacher: str | tuple[str, ...] = ""
    teacher_tta: str = "ten-crop"
    distill_weight: float = 0.5
    distill_temperature: float = 1.0
    # "fixed": the teachers' scores are computed once, on each face's clean `teacher_tta`
    # views, and the student learns them whatever augmented view of the face a step shows it.
    # "consistent": the teachers' float32 networks (manifests with weights beside them) run
    # inside the training graph on the very view the student sees (`confbot.modeling.distill`;
    # Beyer et al. 2022's function matching), at the cost of their forward pass each step.
    distill_mode: str = "fixed"
    arch: ArchitectureConfig = field(default_factory=ArchitectureConfig)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`KEY=VALUE` strings, VALUE in TOML syntax (empty: the empty string), to overrides for
    `load_train_config`; `arch.KEY` names an [arch] setting."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        try:
            if not sep or not key:
                raise ValueError("expected KEY=VALUE")
            # An empty VALUE is the empty string (`teacher=` turns distillation off).
            parsed = tomllib.loads(f"v = {value}")["v"] if value.strip() else ""
        except (ValueError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"--set {item!r}: {exc} (strings need quotes: teacher=\"x.npz\")") from exc
        if key.startswith("arch."):
            out.setdefault("arch", {})[key.removeprefix("arch.")] = parsed
        else:
            out[key] = parsed
    return out


def load_train_config(path: Path | None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read training config ({exc})") from exc
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    if isinstance(overrides.get("arch"), dict) and isinstance(raw.get("arch", {}), dict):
        overrides["arch"] = {**raw.get("arch", {}), **overrides["arch"]}
    raw.update(overrides)
    arch_raw = raw.pop("arch", {})
    known = {f.name for f in fields(TrainConfig)} - {"arch"}
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"unknown training settings: {sorted(unknown)}; known: {sorted(known)}")
    arch_known = {f.name for f in fields(ArchitectureConfig)}
    if set(arch_raw) - arch_known:
        raise ConfigError(f"unknown [arch] settings: {sorted(set(arch_raw) - arch_known)}")
    if isinstance(arch_raw.get("widths"), list):
        arch_raw["widths"] = tuple(arch_raw["widths"])
    if raw.get("mixed_bfloat16") == "auto":
        del raw["mixed_bfloat16"]
    teacher = raw.get("teacher", "")
    if isinstance(teacher, list):
        raw["teacher"] = teacher = tuple(teacher)
    if not isinstance(teacher, str) and not (
            isinstance(teacher, tuple) and all(isinstance(t, str) and t for t in teacher)):
        raise ConfigError(f"teacher must be a path or a list of paths, got {teacher!r}")
    cfg = TrainConfig(**_typed(raw, TrainConfig, ""),
                      arch=ArchitectureConfig(**_typed(arch_raw, ArchitectureConfig, "[arch] ")))
    for name, ok, words in _VALUE_RULES:
        value = getattr(cfg, name)
        if not ok(value):
            raise ConfigError(f"{name} must be {words}, got {value!r}")
    if not 8 <= cfg.arch.crop_size <= cfg.arch.input_size:
        raise ConfigError(f"[arch] crop_size must be between 8 and input_size "
                          f"({cfg.arch.input_size}), got {cfg.arch.crop_size}")
    if (cfg.arch.input_size - cfg.arch.crop_size) % 2:
        # Crops are centred on whole pixels up to half the margin either way; an odd margin
        # would reach into the reflected fill past the face's edge.
        raise ConfigError(f"[arch] input_size - crop_size must be even, got "
                          f"{cfg.arch.input_size} - {cfg.arch.crop_size}")
    if not 0 <= cfg.shift_pixels < cfg.arch.input_size // 2:
        raise ConfigError(f"shift_pixels must be between 0 and {cfg.arch.input_size // 2 - 1}, "
                          f"got {cfg.shift_pixels!r}")
    if cfg.fit_schedule_to_budget and not cfg.budget_minutes > 0:
        raise ConfigError("fit_schedule_to_budget needs a budget: set budget_minutes above 0")
    if not 0 <= cfg.swa_start <= cfg.epochs:
        raise ConfigError(f"swa_start must be an epoch from 1 to epochs ({cfg.epochs}), or 0 "
                          f"for no averaging; got {cfg.swa_start!r}")
    if cfg.swa_start and not (cfg.swa_lr > 0 and cfg.swa_bn_faces > 0):
        raise ConfigError("weight averaging (swa_start) needs swa_lr and swa_bn_faces above 0")
    if cfg.swa_start and not (cfg.swa_start > cfg.warmup_epochs and cfg.swa_lr <= cfg.peak_lr):
        raise ConfigError("swa_start must come after the warm-up (swa_start > warmup_epochs) "
                          "and swa_lr must be at most peak_lr")
    if cfg.swa_start and cfg.fit_schedule_to_budget:
        raise ConfigError("swa_start cannot go with fit_schedule_to_budget: a fitted schedule "
                          "could end before the averaging starts; set epochs to fit instead")
    if cfg.distill_mode == "consistent":
        teachers = teacher_paths(cfg)
        if not teachers or cfg.distill_weight <= 0:
            raise ConfigError('distill_mode = "consistent" needs a teacher and a distill_weight '
                              "above 0")
        scores_files = [str(t) for t in teachers if t.suffix != ".json"]
        if scores_files:
            raise ConfigError('distill_mode = "consistent" runs each teacher\'s network on the '
                              "student's view, so each must be an export manifest (.json), "
                              f"not {scores_files}")
    if cfg.swa_start and cfg.ema_momentum > 0:
        raise ConfigError("swa_start and ema_momentum are two ways of averaging the weights; "
                          "set one of them to 0")
    return cfg


def _one_of(choices: Iterable[str]) -> tuple[Callable[[Any], bool], str]:
    allowed = tuple(choices)
    return (lambda v: v in allowed), f"one of {list(allowed)}"


def _below_one(words: str) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: 0 <= v < 1), words


_SHARE = _below_one("a share in [0, 1)")
_FRACTION = (lambda v: 0 <= v <= 1), "in [0, 1]"
_POSITIVE = (lambda v: v > 0), "positive"
_NOT_NEGATIVE = (lambda v: v >= 0), "zero or positive"

# Each setting's own bounds, checked in this order once the types are right; the rules that
# tie settings together follow them in `load_train_config`.
_VALUE_RULES: tuple[tuple[str, Callable[[Any], bool], str], ...] = tuple(
    (name, *rule) for name, rule in (
        ("epochs", _POSITIVE), ("batch_size", _POSITIVE), ("peak_lr", _POSITIVE),
        ("export_quantize", _one_of(("float32", "int8"))),
        ("teacher_tta", _one_of(sorted(TTA_VIEWS))),
        ("zoom_in", _SHARE), ("zoom_out", _SHARE), ("low_res_prob", _FRACTION),
        ("optimizer", _one_of(OPTIMIZERS)),
        ("momentum", _below_one("in [0, 1)")),
        ("weight_decay", _NOT_NEGATIVE),
        ("ema_momentum", _below_one("in [0, 1) (0 turns it off)")),
        ("mixing", _one_of(MIXINGS)), ("mix_prob", _FRACTION), ("mix_alpha", _POSITIVE),
        ("init_noise", _NOT_NEGATIVE),
        ("distill_weight", _FRACTION), ("distill_temperature", _POSITIVE),
        ("distill_mode", _one_of(DISTILL_MODES)),
    ))


def _typed(raw: dict[str, Any], cls: type, where: str) -> dict[str, Any]:
    """`raw` once each setting is checked to have its field's type: an int where an int is
    due, a non-empty list of positive ints for widths; TOML or `--set` give anything. A
    whole number given for a float setting (`momentum = 0`) comes back as a float, so what
    the settings reach (Keras' optimizers, run.json) sees one type."""
    hints = get_type_hints(cls)
    typed = dict(raw)
    for name, value in raw.items():
        hint = hints[name]
        if name == "teacher":
            continue  # a path or a list of paths, checked by `load_train_config`
        if hint is bool or hint == bool | None:  # None: mixed_bfloat16's "auto"
            ok = isinstance(value, bool)
        elif hint is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif hint is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if ok:
                typed[name] = float(value)
        elif hint is str:
            ok = isinstance(value, str)
        else:  # tuple[int, ...]: the widths
            ok = (isinstance(value, tuple) and len(value) > 0
                  and all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                          for v in value))
        if not ok:
            raise ConfigError(f"{where}{name} must be {_TYPE_WORDS[hint]}, got {value!r}")
    return typed


# What each setting's type hint asks for, in a refusal's words.
_TYPE_WORDS: dict[Any, str] = {
    bool: "true or false", bool | None: 'true, false or "auto"', int: "a whole number",
    float: "a number", str: "a string", tuple[int, ...]: "a non-empty list of positive whole numbers"}


# On the JAX backend the learning rate is set every this many steps (see `train`).
LR_EVERY_JAX = 16
_clock = time.monotonic  # a test's stand-in makes epoch times exact
# A fitted schedule goes by the median of this many recent epochs: an even number, so
# epochs that alternate in speed (checkpoint and validation patterns) give their middle,
# and long enough that the end holds still; one slow epoch still moves it little.
FIT_WINDOW = 16


def fitted_epochs(done: int, planned: int, left_s: float, epoch_s: float, current: int) -> int:
    """The epoch a budget-fitted schedule ends on: as many more epochs of `epoch_s` seconds
    as fit in `left_s`, but never past `planned` and never before the `done` ones. Against
    the `current` end it moves down by any amount but up only by two or more, so epochs
    alternating in speed do not flip the end between N and N + 1."""
    fits = max(done, min(planned, done + int(left_s // epoch_s)))
    return current if fits == current + 1 else fits


class BudgetPlan:
    """The epoch a run's learning-rate schedule ends on, and when it stops for its budget.

    Without `fit_schedule_to_budget` the schedule ends at the config's `epochs`. With it, the
    end is refitted after every epoch to what the budget leaves (`fitted_epochs`), from the
    seconds this process's epochs took, so a slow epoch's shortening is undone when the
    machine frees up again. A resumed fitted run goes on with its stored plan while that still
    lies ahead. Either way the run stops early when the next epoch would overrun the budget.
    """

    def __init__(self, cfg: TrainConfig, state: dict[str, Any]) -> None:
        self.cfg, self.state = cfg, state
        self.budget_s = cfg.budget_minutes * 60 if cfg.budget_minutes > 0 else math.inf
        self.fit = cfg.fit_schedule_to_budget and self.budget_s < math.inf
        stored = int(state.get("planned_epochs", 0))
        self.epochs = (min(cfg.epochs, stored)
                       if self.fit and stored > int(state["epochs_done"]) else cfg.epochs)
        self.started = self.now = _clock()
        self.wall_before = float(state["wall_seconds"])
        # Seconds from the end of one epoch (validation and checkpoints included) to the end
        # of the next, for this process's epochs.
        self.epoch_seconds: list[float] = []

    def seconds_per_epoch(self) -> float:
        """Epoch time so far, leaving out this process's first epoch (it compiles) if it can:
        the median of the last `FIT_WINDOW`, so one epoch slowed by a busy machine moves it
        little and epochs alternating between two speeds do not move the end to and fro."""
        timed = self.epoch_seconds[1:] or self.epoch_seconds
        return float(np.median(timed[-FIT_WINDOW:]))

    def epoch_ended(self, done: int) -> None:
        """Time the epoch that just ended (`done` epochs so far) and refit the schedule."""
        self.now = _clock()
        self.epoch_seconds.append(self.now - (self.started + sum(self.epoch_seconds)))
        if not (self.fit and len(self.epoch_seconds) >= 2):
            return
        fits = fitted_epochs(done, self.cfg.epochs, self.budget_s - (self.now - self.started),
                             self.seconds_per_epoch(), self.epochs)
        if fits != self.epochs:
            print(f"schedule fitted to the budget: it ends at epoch {fits}, not {self.epochs} "
                  f"({self.seconds_per_epoch():.1f} s an epoch)", flush=True)
        self.epochs = self.state["planned_epochs"] = fits

    def wall_seconds(self) -> float:
        """The run's wall time to the end of the last epoch, earlier processes included."""
        return self.wall_before + self.now - self.started

    def should_stop(self, done: int) -> bool:
        if done >= self.epochs:
            return True
        if self.now - self.started + self.seconds_per_epoch() > self.budget_s:
            print(f"wall-clock budget of {self.cfg.budget_minutes} min reached; stopping",
                  flush=True)
            return True
        return False


def class_weights(y: np.ndarray, power: float) -> dict[int, float]:
    counts = np.bincount(y, minlength=len(EMOTIONS)).astype(np.float64)
    w = (counts.mean() / np.maximum(counts, 1)) ** power
    w = w / np.average(w, weights=counts)  # keep the mean loss scale unchanged
    return {i: float(v) for i, v in enumerate(w)}


def lr_at(step: int, steps_per_epoch: int, cfg: TrainConfig, epochs: int | None = None) -> float:
    """Linear warm-up, then cosine decay to `min_lr` (Keras 3 ignores Adam's `decay`) at the
    end of `epochs` (default: the config's). With weight averaging the decay ends at `swa_lr`
    when epoch `swa_start` begins, and the rate holds there to the end."""
    warm = cfg.warmup_epochs * steps_per_epoch
    total = (epochs or cfg.epochs) * steps_per_epoch
    floor = cfg.min_lr
    if cfg.swa_start:
        total, floor = (cfg.swa_start - 1) * steps_per_epoch, cfg.swa_lr
        if step >= max(warm, total):
            return floor
    if step < warm:
        return cfg.peak_lr * (step + 1) / warm
    progress = min(1.0, (step - warm) / max(1, total - warm))
    return floor + 0.5 * (cfg.peak_lr - floor) * (1 + math.cos(math.pi * progress))


def auto_bf16(cpu: CpuInfo, started_with: bool | None = None) -> tuple[bool, str]:
    """What `mixed_bfloat16 = "auto"` picks, and why: what a resumed run started with, or else
    bf16 only where this CPU has bf16 arithmetic."""
    if started_with is not None:
        return started_with, "as the run started"
    choice = cpu.bf16_arithmetic is True
    return choice, f"this CPU has {'' if choice else 'no '}bf16 arithmetic: {cpu.describe()}"


def _has_gpu(keras: Any) -> bool:
    try:
        return bool(keras.distribution.list_devices("gpu"))
    except RuntimeError:  # JAX refuses to list a platform it does not have
        return False


def resolve_bf16(cfg: TrainConfig, cpu: CpuInfo, started_with: bool | None = None, *,
                 gpu: bool = False) -> TrainConfig:
    """`cfg` with `mixed_bfloat16` decided. "auto" (None) becomes what a resumed run started
    with (`started_with`), or else whether this CPU has bf16 arithmetic; the choice is printed.
    An explicit true on a CPU without it, and no `gpu`, is kept with a warning."""
    choice = cfg.mixed_bfloat16
    if choice is None:
        choice, why = auto_bf16(cpu, started_with)
        print(f'mixed_bfloat16 = "auto": training in {"bfloat16" if choice else "float32"} '
              f"({why})", flush=True)
    elif choice and cpu.bf16_arithmetic is False and not gpu:
        log.warning("mixed_bfloat16 is true, but this CPU (%s) has no bf16 arithmetic "
                    "(AVX512-BF16, AMX): bfloat16 is emulated here and trains several times "
                    'slower than float32; `confbot bench train` measures both. "auto" picks '
                    "float32 on such a CPU", cpu.describe())
    return replace(cfg, mixed_bfloat16=choice)


def distill_targets(y: np.ndarray, teacher: np.ndarray, weight: float,
                    temperature: float) -> np.ndarray:
    """One-hot labels `y` mixed with the teacher's (N, 7) scores, softened by `temperature`."""
    soft = np.power(np.clip(teacher, 1e-8, None), 1.0 / temperature)
    soft /= soft.sum(axis=1, keepdims=True)
    onehot = np.eye(len(EMOTIONS), dtype=np.float32)[y]
    return ((1 - weight) * onehot + weight * soft).astype(np.float32)


def teacher_paths(cfg: TrainConfig) -> list[Path]:
    teachers = [cfg.teacher] if isinstance(cfg.teacher, str) else list(cfg.teacher)
    return [Path(t) for t in teachers if t]


def teacher_scores(manifest: Path, tta: str, faces: np.ndarray) -> tuple[np.ndarray, str]:
    """The teacher's scores for `faces` (uint8 (N, 48, 48)) and its model's sha256."""
    from confbot.modeling.evaluate import classify_all
    from confbot.vision import load_classifier

    try:
        classifier = load_classifier(manifest, threads=2, tta=tta)
    except ModelError as exc:
        raise ConfigError(f"teacher: {exc}") from exc
    scores = classify_all(classifier, faces, chunk=256, progress=f"teacher {manifest} ({tta})")
    return scores, classifier.manifest.sha256


def load_scores_file(path: Path, train_set: FaceSet) -> tuple[np.ndarray, str]:
    """A teacher's scores computed elsewhere (say, by a network trained on another machine).

    The file is an `.npz` with `scores`, float (N, 7) probabilities in `EMOTIONS` order for the
    N faces of the training set in file order, and `train_sha256`, the sha256 of that
    training file, so scores cannot be paired with the wrong faces. Returns the scores and the
    file's sha256.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            scores = np.asarray(data["scores"], np.float32)
            made_for = str(data["train_sha256"])
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"teacher: {path} is not a scores file with `scores` and "
                          f"`train_sha256` ({exc})") from exc
    if made_for != train_set.sha256:
        raise ConfigError(f"teacher: {path} holds scores for another training file "
                          f"(sha256 {made_for[:16]}..., this one {train_set.sha256[:16]}...)")
    if scores.shape != (len(train_set), len(EMOTIONS)):
        raise ConfigError(f"teacher: {path} holds scores of shape {scores.shape}, expected "
                          f"({len(train_set)}, {len(EMOTIONS)})")
    if not np.isfinite(scores).all() or (scores < 0).any() or \
            not np.allclose(scores.sum(axis=1), 1.0, atol=1e-3):
        raise ConfigError(f"teacher: {path}: each row of `scores` must be probabilities "
                          "summing to 1")
    return scores, file_sha256(path)


def write_scores_file(path: Path, scores: np.ndarray, face_set: FaceSet,
                      model_sha256: list[str]) -> None:
    """Save `scores` for `face_set` in the form `load_scores_file` reads (a teacher file)."""
    if path.suffix != ".npz":
        raise ConfigError(f"{path}: a scores file must end in .npz")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_file(path, lambda tmp: np.savez(
            tmp, scores=np.asarray(scores, np.float32), train_sha256=face_set.sha256,
            model_sha256=np.array(model_sha256)))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write the scores file ({exc})") from exc


def ensemble_scores(teachers: list[Path], tta: str,
                    train_set: FaceSet) -> tuple[np.ndarray, list[str]]:
    """The teachers' scores on the training faces, averaged, and each teacher's sha256."""
    results = [load_scores_file(t, train_set) if t.suffix == ".npz"
               else teacher_scores(t, tta, train_set.x) for t in teachers]
    return np.mean([r[0] for r in results], axis=0), [r[1] for r in results]


def compiled_training_model(backbone: Any, cfg: TrainConfig, teachers: Any = ()) -> Any:
    """The network `backbone` behind the run's augmentation layers, compiled with its loss and
    optimizer: what `train` fits, and what `training_speed` times. With `teachers` (frozen
    networks, `distill_mode = "consistent"`) they score each augmented face beside it and the
    loss mixes their scores into the targets."""
    import keras

    from confbot.modeling.architecture import build_training_model
    from confbot.modeling.distill import ConsistentDistillation, student_accuracy_metric

    model = build_training_model(backbone, cfg.arch, seed=cfg.seed, erase_prob=cfg.erase_prob,
                                 shift_pixels=cfg.shift_pixels, zoom=(cfg.zoom_in, cfg.zoom_out),
                                 low_res_prob=cfg.low_res_prob, teachers=teachers)
    if teachers:
        loss = ConsistentDistillation(cfg.distill_weight, cfg.distill_temperature,
                                      cfg.label_smoothing)
        metrics: list[Any] = [student_accuracy_metric()]
    else:
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing)
        metrics = ["accuracy"]
    model.compile(optimizer=_optimizer(keras, cfg), loss=loss, metrics=metrics)
    return model


def consistent_teachers(cfg: TrainConfig) -> tuple[list[Any], list[str]]:
    """The frozen teacher networks (under the current dtype policy) and their weights' sha256
    for a run with `distill_mode = "consistent"`; none otherwise."""
    if cfg.distill_mode != "consistent":
        return [], []
    from confbot.modeling.distill import teacher_networks

    return teacher_networks(teacher_paths(cfg), cfg.arch)


def training_speed(cfg: TrainConfig, *, bf16: bool, steps: int) -> dict[str, Any]:
    """Training images a second for `cfg`'s network and batch size, in mixed bfloat16 or
    float32, timed over `steps` batches of real training faces after one untimed batch (which
    traces and compiles). Also the seconds an epoch of the training set would take at that
    rate. Keras' global dtype policy is the caller's again afterwards."""
    import keras

    from confbot.modeling.architecture import build_backbone

    if steps < 1:
        raise ConfigError(f"steps must be at least 1, got {steps}")
    train_set = load_face_set(Path(cfg.train_data))
    n = cfg.batch_size * (steps + 1)
    pick = np.random.default_rng(cfg.seed).integers(0, len(train_set), n)
    x = network_input(train_set.x[pick], None)
    y = keras.utils.to_categorical(train_set.y[pick], len(EMOTIONS))
    keras.utils.set_random_seed(cfg.seed)
    with dtype_policy(bf16):
        teachers, _ = consistent_teachers(cfg)
        model = compiled_training_model(build_backbone(cfg.arch), cfg, teachers)
        first = cfg.batch_size
        model.fit(x[:first], y[:first], batch_size=cfg.batch_size, epochs=1, verbose=0)
        t0 = time.perf_counter()
        model.fit(x[first:], y[first:], batch_size=cfg.batch_size, epochs=1, verbose=0,
                  shuffle=False)
        seconds = time.perf_counter() - t0
    per_s = (n - first) / seconds
    return {"policy": policy_name(bf16), "steps": steps,
            "batch_size": cfg.batch_size, "images_per_s": round(per_s, 1),
            "epoch_s": round(len(train_set) / per_s, 1)}


def train(cfg: TrainConfig, run_dir: Path, *, resume: bool, command: str) -> Path:
    """Train (or resume) into `run_dir`; returns the path of the best weights. The run sets
    Keras' global dtype policy to its precision; the caller's is put back when it ends."""
    with kept_dtype_policy():
        return _train(cfg, run_dir, resume=resume, command=command)


def _train(cfg: TrainConfig, run_dir: Path, *, resume: bool, command: str) -> Path:
    import keras

    from confbot.modeling.architecture import build_backbone, build_inference_model

    run_dir.mkdir(parents=True, exist_ok=True)
    last_ckpt = run_dir / "last.keras"
    best_path = run_dir / "best.weights.h5"
    state_path = run_dir / "run.json"
    history_path = run_dir / "history.csv"
    teacher_shas: list[str] = []  # a new consistent-distillation run's, from its teachers
    if resume and not last_ckpt.exists():
        raise ConfigError(f"--resume: no checkpoint at {last_ckpt}")
    if not resume and last_ckpt.exists():
        raise ConfigError(f"{run_dir} already holds a run; pass --resume or pick a new --out")

    train_set: FaceSet = load_face_set(Path(cfg.train_data))
    val_set: FaceSet = load_face_set(Path(cfg.val_data))
    state: dict[str, Any] = {}
    if resume:
        try:
            state = json.loads(state_path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--resume: cannot read the run's state {state_path} ({exc})") from exc
    cfg = resolve_bf16(cfg, cpu_info(), state.get("config", {}).get("mixed_bfloat16"),
                       gpu=_has_gpu(keras))
    keras.utils.set_random_seed(cfg.seed)
    keras.mixed_precision.set_global_policy(policy_name(cfg.mixed_bfloat16))

    steps_per_epoch = math.ceil(len(train_set) / cfg.batch_size)
    if resume:
        if state["train_sha256"] != train_set.sha256:
            raise ConfigError("--resume: the training data changed since the run started")
        new_config = _jsonable(asdict(cfg))
        held_names = HELD_BY_CHECKPOINT + (HELD_BY_CONSISTENT_DISTILLATION
                                           if cfg.distill_mode == "consistent" else ())
        held = [k for k in held_names
                if k in state["config"] and state["config"][k] != new_config[k]]
        if held:
            raise ConfigError(f"--resume: {', '.join(held)} changed since the run started; "
                              "last.keras holds the network, its augmentation, loss and "
                              "optimizer as they were. Start a new run (init_weights) instead")
        if state["config"] != new_config:
            log.warning("resuming %s with a changed config; recorded in run.json", run_dir)
        state["config"] = new_config
        state.setdefault("resumed", []).append({"command": command,
                                                "at_epoch": state["epochs_done"]})
        upgrade_history(history_path)
        # The loss and metric of a consistent-distillation run are registered on import.
        import confbot.modeling.distill  # noqa: F401

        model = keras.models.load_model(last_ckpt, compile=True)
        backbone = model.get_layer("backbone")
    else:
        state = {
            "config": _jsonable(asdict(cfg)),
            "train_sha256": train_set.sha256,
            "val_sha256": val_set.sha256,
            "command": command,
            "epochs_done": 0,
            "best_val_accuracy": 0.0,
            "best_epoch": 0,
            "wall_seconds": 0.0,
        }
        (run_dir / "config.json").write_text(json.dumps(state["config"], indent=2))
        backbone = build_backbone(cfg.arch)
        if cfg.init_weights:
            state["init_weights_sha256"] = _load_init_weights(backbone, Path(cfg.init_weights),
                                                              cfg)
        teacher_nets, teacher_shas = consistent_teachers(cfg)
        model = compiled_training_model(backbone, cfg, teacher_nets)

    # Validation runs through a float32 copy of the network, as the product will.
    with dtype_policy(False):
        eval_backbone = build_backbone(cfg.arch)
        eval_model = build_inference_model(eval_backbone, cfg.arch)

    x_train = network_input(train_set.x, None)
    y_train = keras.utils.to_categorical(train_set.y, len(EMOTIONS))
    teachers = teacher_paths(cfg)
    consistent = cfg.distill_mode == "consistent"
    if teachers:
        if consistent:
            scores = _centre_crop_scores(model, x_train, cfg.arch)
            from confbot.modeling.export import load_export

            # A resumed run's teachers came from last.keras: check the files the config names.
            shas = teacher_shas or [load_export(t).weights_sha256 for t in teachers]
            how = "consistent, on each augmented face; here on the centre crops"
        else:
            scores, shas = ensemble_scores(teachers, cfg.teacher_tta, train_set)
            how = cfg.teacher_tta
        # One teacher is recorded by its sha256, an ensemble by the list (in config order).
        teacher_sha: str | list[str] = shas[0] if len(shas) == 1 else shas
        if resume and state.get("teacher", {}).get("sha256") not in (None, teacher_sha):
            raise ConfigError("--resume: the teacher model changed since the run started")
        agreement = float((scores.argmax(1) == train_set.y).mean())
        state["teacher"] = {"sha256": teacher_sha, "train_accuracy": round(agreement, 4),
                            **({"mode": "consistent"} if consistent else {})}
        names = ", ".join(str(t) for t in teachers)
        print(f"teacher {names} ({how}): {agreement:.4f} of the training "
              f"labels; targets mixed in with weight {cfg.distill_weight}", flush=True)
        if not consistent:
            y_train = distill_targets(train_set.y, scores, cfg.distill_weight,
                                      cfg.distill_temperature)
    x_val = network_input(val_set.x, None)
    average = None
    if cfg.swa_start:
        average = WeightAverage(eval_backbone, run_dir, state,
                                sample_faces(train_set.x, cfg.swa_bn_faces, cfg.seed),
                                cfg.arch.crop_size)
    # Per-face weights from the true labels: Keras' class_weight would go by each target's
    # largest entry, which with a teacher's scores mixed in is not always the label.
    weights = class_weights(train_set.y, cfg.class_weight_power)
    sample_weight = np.array([weights[c] for c in range(len(EMOTIONS))], np.float32)[train_set.y]
    plan = BudgetPlan(cfg, state)
    # With JAX the training state lives outside the model's variables during an epoch, and a
    # callback touching `self.model` copies it back; doing that every step costs more than a
    # small network's step, so there the learning rate is set every LR_EVERY_JAX steps.
    lr_every = LR_EVERY_JAX if keras.backend.backend() == "jax" else 1

    def validate() -> float:
        probs = eval_model.predict(x_val, batch_size=256, verbose=0)
        return float((probs.argmax(1) == val_set.y).mean())

    # Mixed batches come from a dataset of their own, which shuffles them itself by the epoch
    # set below.
    batches = (None if cfg.mixing == "none" else
               mixed_batches(x_train, y_train, sample_weight, batch_size=cfg.batch_size,
                             seed=cfg.seed, first_epoch=int(state["epochs_done"]),
                             kind=cfg.mixing, prob=cfg.mix_prob, alpha=cfg.mix_alpha))

    class Epochs(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
            if batch % lr_every:
                return
            step = self._epoch * steps_per_epoch + batch
            self.model.optimizer.learning_rate.assign(
                lr_at(step, steps_per_epoch, cfg, plan.epochs))

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self._epoch = epoch
            self._t0 = _clock()
            if batches is not None:
                batches.epoch = epoch

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            logs = dict(logs or {})
            # The float32 copy is what is validated and, if best, saved (the average, with EMA
            # or weight averaging; then the epoch's own weights are validated for the history).
            with averaged_weights(self.model):
                eval_backbone.set_weights(backbone.get_weights())
            raw_acc: float | None = None
            if average is not None and epoch + 1 >= cfg.swa_start:
                raw_acc = validate()
                average.add_and_load()
            val_acc = validate()
            epoch_s = _clock() - self._t0
            state["epochs_done"] = epoch + 1
            if val_acc > state["best_val_accuracy"] or not best_path.exists():
                state["best_val_accuracy"] = val_acc
                state["best_epoch"] = epoch + 1
                replace_file(best_path, eval_backbone.save_weights)
            replace_file(last_ckpt, self.model.save)
            # The rate this epoch ended on, before a refit moves the schedule's end.
            lr_used = lr_at((epoch + 1) * steps_per_epoch - 1, steps_per_epoch, cfg,
                            plan.epochs)
            plan.epoch_ended(epoch + 1)
            state["wall_seconds"] = plan.wall_seconds()
            replace_file(state_path, lambda tmp: tmp.write_text(json.dumps(state, indent=2)))
            prune_averages(run_dir, state)
            averaged = average.count if average is not None and raw_acc is not None else 0
            append_history(history_path, [
                epoch + 1, f"{logs.get('loss', 0):.4f}", f"{logs.get('accuracy', 0):.4f}",
                f"{val_acc:.4f}", f"{lr_used:.6f}", f"{epoch_s:.1f}", averaged,
                "" if raw_acc is None else f"{raw_acc:.4f}",
            ])
            swa_words = ("" if raw_acc is None else
                         f" (average of {averaged}; this epoch's own {raw_acc:.4f})")
            print(
                f"epoch {epoch + 1}/{plan.epochs}: loss {logs.get('loss', 0):.4f} "
                f"acc {logs.get('accuracy', 0):.4f} val_acc {val_acc:.4f}{swa_words} "
                f"(best {state['best_val_accuracy']:.4f} @ {state['best_epoch']}) {epoch_s:.0f}s",
                flush=True,
            )
            if plan.should_stop(epoch + 1):
                self.model.stop_training = True

    initial_epoch = int(state["epochs_done"])
    if initial_epoch < plan.epochs:
        data: dict[str, Any] = (
            {"x": x_train, "y": y_train, "batch_size": cfg.batch_size,
             "sample_weight": sample_weight, "shuffle": True}
            if batches is None else {"x": batches, "shuffle": False})
        model.fit(
            **data,
            epochs=cfg.epochs,
            initial_epoch=initial_epoch,
            verbose=1 if sys.stdout.isatty() else 2,
            callbacks=[Epochs()],
        )
    # However the run ended (all epochs, or the budget), its best epoch leaves ready to ship.
    if not cfg.export_at_end:
        print(f"best epoch {state['best_epoch']} (val_acc {state['best_val_accuracy']:.4f}) in "
              f"{best_path}; export it with `confbot model export {run_dir}`", flush=True)
        return best_path
    from confbot.modeling.export import export_run

    check = export_run(run_dir, run_dir / "export")
    print(f"exported the best epoch ({state['best_epoch']}, val_acc {state['best_val_accuracy']:.4f}) "
          f"to {run_dir / 'export'}, against Keras: {check}", flush=True)
    return best_path


# The columns of a run's history.csv. val_accuracy is the validated network's: with weight
# averaging, the average of `averaged` epochs, and raw_val_accuracy the epoch's own.
HISTORY_FIELDS = ("epoch", "loss", "accuracy", "val_accuracy", "lr", "seconds", "averaged",
                  "raw_val_accuracy")


def upgrade_history(path: Path) -> None:
    """Rewrite a history written by an older version, with fewer columns, under today's
    header, the old rows' missing columns left empty, so a resumed run's history stays one
    table. The cells go by position: a version's columns are a leading part of today's (a
    resume under stop 22's code left longer rows under the old header). A file with other
    columns is refused."""
    if not path.exists():
        return
    with path.open(newline="") as fh:
        header, *rows = list(csv.reader(fh)) or [[]]
    if tuple(header) == HISTORY_FIELDS:
        return
    if tuple(header) != HISTORY_FIELDS[:len(header)] or any(len(r) > len(HISTORY_FIELDS)
                                                           for r in rows):
        raise ConfigError(f"--resume: {path} has columns this version does not write: "
                          f"{sorted(set(header) - set(HISTORY_FIELDS))}")

    def rewrite(tmp: Path) -> None:
        with tmp.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(HISTORY_FIELDS)
            w.writerows(r + [""] * (len(HISTORY_FIELDS) - len(r)) for r in rows)

    replace_file(path, rewrite)


def append_history(path: Path, row: list[object]) -> None:
    """Append one epoch's row (HISTORY_FIELDS, in order), with the header if `path` is new."""
    new = not path.exists()
    with path.open("a", newline="") as fh:
        w = csv.writer(fh)
        if new:
            w.writerow(HISTORY_FIELDS)
        w.writerow(row)


def _centre_crop_scores(model: Any, x_train: np.ndarray, arch: ArchitectureConfig) -> np.ndarray:
    """The mean scores of the teachers inside a consistent-distillation training model on the
    faces' centre crops, as a check that they are the networks meant (their labels agreement)."""
    nets = [layer for layer in model.layers
            if layer.name.startswith("teacher") and layer.name[len("teacher"):].isdigit()]
    margin = (arch.input_size - arch.crop_size) // 2
    crops = x_train[:, margin:margin + arch.crop_size, margin:margin + arch.crop_size]
    return np.mean([net.predict(crops, batch_size=512, verbose=0) for net in nets], axis=0)


def _optimizer(keras: Any, cfg: TrainConfig) -> Any:
    ema = {"use_ema": cfg.ema_momentum > 0, "ema_momentum": cfg.ema_momentum}
    if cfg.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate=cfg.peak_lr, momentum=cfg.momentum,
                                    nesterov=True, weight_decay=cfg.weight_decay, **ema)
    return keras.optimizers.AdamW(learning_rate=cfg.peak_lr, weight_decay=cfg.weight_decay,
                                  **ema)


def _load_init_weights(backbone: Any, path: Path, cfg: TrainConfig) -> str:
    """Load `path` (weights, or a manifest naming them) into `backbone`; the weights' sha256."""
    if path.suffix == ".json":
        return _load_resized(backbone, path, cfg)
    try:
        digest = file_sha256(path)
        backbone.load_weights(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"init_weights {path}: cannot start from these weights ({exc}); "
                          "they must come from a network with the same [arch], or name the "
                          "manifest beside them to resize a network of other widths") from exc
    return digest


def _load_resized(backbone: Any, manifest: Path, cfg: TrainConfig) -> str:
    """Start `backbone` from the float32 weights an export manifest names, resized to [arch]."""
    from confbot.modeling.export import load_export
    from confbot.modeling.resize import check_resizable, resize_backbone

    try:
        src = load_export(manifest)
    except ModelError as exc:
        raise ConfigError(f"init_weights {exc}") from exc
    check_resizable(src.arch, cfg.arch)
    resize_backbone(src.backbone, backbone, src.arch, cfg.arch, seed=cfg.seed,
                    noise=cfg.init_noise)
    if (src.arch.widths, src.arch.head_units) != (cfg.arch.widths, cfg.arch.head_units):
        print(f"init_weights: resized {list(src.arch.widths)} head {src.arch.head_units} -> "
              f"{list(cfg.arch.widths)} head {cfg.arch.head_units}", flush=True)
    return src.weights_sha256


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    return value
