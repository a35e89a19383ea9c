"""Choosing a simulcast layer for a Janus subscription (no Janus needed: aiortc cannot publish
simulcast, so the layer switching is driven here by frame heights)."""

from __future__ import annotations

import asyncio

from av import VideoFrame

from confbot.rtc.simulcast import SimulcastLayerPicker, SimulcastTrack


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run(picker: SimulcastLayerPicker, layers: dict[int, int], frames: int = 50) -> int:
    """Feed the picker frames from the layer it asks for; heights per substream in `layers`.
    A substream not in `layers` keeps sending the previous one. Returns the final substream."""
    sending = picker.substream
    for _ in range(frames):
        wanted = picker.observe(layers[sending])
        if wanted is not None and wanted in layers:
            sending = wanted
        picker._clock.now += 0.1  # type: ignore[attr-defined]
    return sending


def test_janus_simulcast_walks_down_to_the_lowest_layer_tall_enough() -> None:
    picker = SimulcastLayerPicker(min_height_px=360, clock=FakeClock())
    assert run(picker, {2: 720, 1: 360, 0: 180}) == 1
    assert picker.done and picker.substream == 1 and picker.height_px == 360


def test_janus_simulcast_goes_back_up_when_the_lower_layer_is_too_short() -> None:
    picker = SimulcastLayerPicker(min_height_px=360, clock=FakeClock())
    assert run(picker, {2: 1080, 1: 540, 0: 270}) == 1


def test_janus_simulcast_keeps_the_tallest_when_none_is_tall_enough() -> None:
    picker = SimulcastLayerPicker(min_height_px=360, clock=FakeClock())
    assert run(picker, {2: 240, 1: 120, 0: 60}) == 2
    assert picker.done


def test_janus_simulcast_stays_when_the_lower_layer_never_shows_up() -> None:
    clock = FakeClock()
    picker = SimulcastLayerPicker(min_height_px=360, switch_timeout_s=2.0, clock=clock)
    # Two layers only: asking for substream 0 changes nothing; after the timeout, stay on 1.
    assert run(picker, {2: 720, 1: 480}) == 1
    assert picker.done and picker.substream == 1


def test_janus_simulcast_track_passes_frames_and_requests_switches() -> None:
    class Inner:
        kind = "video"

        def __init__(self) -> None:
            self.height = 720

        async def recv(self) -> VideoFrame:
            return VideoFrame(640, self.height, "yuv420p")

        def stop(self) -> None:
            pass

    inner = Inner()
    requested: list[int] = []

    def switch(substream: int) -> None:
        requested.append(substream)
        inner.height = {1: 360, 0: 180}[substream] if substream < 2 else 720

    track = SimulcastTrack(inner, switch, min_height_px=300)  # type: ignore[arg-type]

    async def pull() -> list[int]:
        return [(await track.recv()).height for _ in range(5)]

    heights = asyncio.run(pull())
    assert requested == [1, 0, 1]  # 720 -> 360 -> 180 is too short -> back to 360
    assert heights == [720, 360, 180, 360, 360]
    assert track.picker.done
