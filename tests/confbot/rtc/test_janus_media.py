"""The test videos the Janus and WHIP end-to-end tests send."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from face_core import EMOTIONS
from tests.support.media import (
    BACKGROUND,
    VIDEO_FPS,
    VIDEO_HEIGHT,
    VIDEO_WIDTH,
    FaceVideo,
    fer2013_publictest,
)


def decode(path: Path) -> tuple[list[np.ndarray], list[bool], str]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        keyframes = [p.is_keyframe for p in container.demux(stream) if p.size]
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
        codec = container.streams.video[0].codec_context.name
    return frames, keyframes, codec


def test_janus_media_astronaut_video_is_vp8_640x360_with_a_keyframe_each_second(
    astronaut_video: Path,
) -> None:
    frames, keyframes, codec = decode(astronaut_video)
    assert codec == "vp8"
    assert len(frames) == 4 * VIDEO_FPS
    assert all(f.shape == (VIDEO_HEIGHT, VIDEO_WIDTH, 3) for f in frames)
    assert [i for i, key in enumerate(keyframes) if key] == [0, 15, 30, 45]
    first = frames[0].astype(int)
    assert abs(first[5, 5] - BACKGROUND).max() <= 6  # plain grey around the face
    assert first[130:230, 270:370].std() > 20  # and a face with detail in the middle
    moved = [np.abs(frames[i].astype(int) - first).mean() for i in (5, 10, 20)]
    assert max(moved) > 0.5  # the face jitters a little


def test_janus_media_fer2013_videos_show_a_face_the_model_reads_as_labelled(
    fer2013_video: Callable[[str], FaceVideo], analyzer: Any
) -> None:
    data = fer2013_publictest()
    assert data is not None  # the fixture skips otherwise
    _, labels, classes = data
    videos = {emotion: fer2013_video(emotion) for emotion in ("happy", "surprise")}
    assert videos["happy"].fer2013_index != videos["surprise"].fer2013_index
    for emotion, video in videos.items():
        assert video.emotion == emotion
        assert classes[labels[video.fer2013_index]] == emotion  # FER2013's own label
        frames, _, codec = decode(video.path)
        assert codec == "vp8" and len(frames) == 4 * VIDEO_FPS
        assert frames[0].shape == (VIDEO_HEIGHT, VIDEO_WIDTH, 3)
        assert frames[0][80:280, 220:420].std() > 10
        # What the bot will see: one face, read as the expected emotion.
        (face,) = analyzer.analyze_image(frames[len(frames) // 2])
        assert EMOTIONS[int(np.argmax(face.scores))] == emotion
    assert fer2013_video("happy") is videos["happy"]  # chosen once
    with pytest.raises(ValueError, match="emotion 'joy'"):
        fer2013_video("joy")
