"""`confbot bench call`: the figures it derives, and one short real run on loopback."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from confbot.bench_call import Window, _figures, bench_call
from tests.support.server import auto_model_file


def _window(rss: list[float], *, latencies: list[float], samples: int) -> Window:
    return Window(latencies_ms=latencies, samples=samples, participants={"a", "b"},
                  rss_mb=[(float(i), v) for i, v in enumerate(rss)], cpu_s=12.0)


def test_rate_latency_and_cpu_figures() -> None:
    figures = _figures(_window([100.0] * 61, latencies=[float(i) for i in range(1, 101)], samples=240),
                       participants=2, seconds=60, sample_fps=2.0)
    assert figures["samples_per_s"] == 4.0
    assert figures["expected_samples_per_s"] == 4.0
    assert figures["latency_ms_p50"] == pytest.approx(50.5)
    assert figures["latency_ms_p95"] == pytest.approx(95.05, abs=0.1)
    assert figures["latency_ms_max"] == 100.0
    assert figures["cpu_s_per_participant_s"] == 0.1
    assert figures["server_cpu_cores"] == 0.2
    assert figures["rss_slope_mb_per_min"] == 0.0


def test_rss_that_settles_is_told_apart_from_a_leak() -> None:
    # Ten minutes, one reading a second: 20 MB of growth in the first two minutes, then flat.
    settles = [100 + min(t, 120) / 6 for t in range(601)]
    leaks = [100 + t / 30 for t in range(601)]  # 2 MB/min throughout
    flat = _figures(_window(settles, latencies=[1.0], samples=1), participants=2, seconds=600,
                    sample_fps=2.0)
    rising = _figures(_window(leaks, latencies=[1.0], samples=1), participants=2, seconds=600,
                      sample_fps=2.0)
    assert flat["rss_slope_mb_per_min"] > 0.5
    assert flat["rss_slope_second_half_mb_per_min"] == pytest.approx(0.0, abs=1e-6)
    assert rising["rss_slope_second_half_mb_per_min"] == pytest.approx(2.0, rel=1e-3)
    assert rising["rss_mb_peak"] == pytest.approx(120.0)


def test_too_few_rss_readings_give_no_slope() -> None:
    figures = _figures(_window([100.0, 101.0], latencies=[], samples=0), participants=2, seconds=1,
                       sample_fps=2.0)
    assert math.isnan(figures["rss_slope_mb_per_min"])
    assert math.isnan(figures["latency_ms_p95"])


@pytest.mark.slow
@pytest.mark.parametrize("model", ["auto", "the other"])
def test_short_real_bench_reaches_every_participant(publictest_path: Path, model: str) -> None:
    # "the other": the shipped model "auto" does not take on this machine, named by its path.
    other = {"emotion_cnn.tflite": "emotion_cnn_lite", "emotion_cnn_lite.tflite": "emotion_cnn",
             "emotion_cnn_micro.tflite": "emotion_cnn_lite"}
    manifest = "auto" if model == "auto" else f"models/{other[auto_model_file()]}.json"
    figures = bench_call(participants=2, seconds=6, sample_fps=2.0, faces=publictest_path,
                         model=manifest)
    assert figures["participants_with_samples"] == 2
    assert figures["samples_per_s"] > 0
    assert 0 < figures["latency_ms_p50"] <= figures["latency_ms_p95"] < 10_000
    assert figures["rss_mb_peak"] > 50
    assert figures["cpu_s_per_participant_s"] > 0
    from confbot.vision import default_blazeface_model

    # What the server built for "auto", as its /healthz says.
    assert figures["detector"] == ("blazeface" if default_blazeface_model() else "haar")
    expected = auto_model_file() if model == "auto" else Path(manifest).with_suffix(".tflite").name
    assert figures["model"] == expected


def test_a_detector_the_server_does_not_know_is_refused_before_the_call(tmp_path: Path) -> None:
    from confbot.errors import InputError

    faces = tmp_path / "faces.npz"
    faces.write_bytes(b"")
    with pytest.raises(InputError, match="--detector must be one of auto, haar, blazeface, got 'yunet'"):
        bench_call(participants=1, seconds=1, sample_fps=2.0, faces=faces, detector="yunet")
    with pytest.raises(InputError, match="--detector must be one of"):
        bench_call(participants=1, seconds=1, sample_fps=2.0, faces=faces, detector="mtcnn")


def test_a_model_manifest_that_is_not_there_is_refused_before_the_call(
        publictest_path: Path, tmp_path: Path) -> None:
    from confbot.errors import InputError

    with pytest.raises(InputError, match=r"--model .*nope\.json: model manifest not found"):
        bench_call(participants=1, seconds=1, sample_fps=2.0, faces=publictest_path,
                   model=str(tmp_path / "nope.json"))
    # One the server cannot load: it exits, and the error carries its reason from the log.
    broken = tmp_path / "broken.json"
    broken.write_text('{"file": "x.tflite"}')
    with pytest.raises(InputError, match=r"(?s)exited with status 2:.*manifest is missing or has a bad"):
        bench_call(participants=1, seconds=1, sample_fps=2.0, faces=publictest_path,
                   model=str(broken))
