"""`confbot analyze`: emotions of the faces in image and video files, as JSON lines."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from confbot.errors import ConfbotError, InputError
from confbot.media_files import VideoReader, VideoWriter, draw_faces, read_image
from face_core import FaceAnalyzer, FaceResult, ImageError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm"}


def face_record(face: FaceResult) -> dict[str, Any]:
    return {
        "face_index": face.face_index,
        "box": face.box.as_list(),
        "top_emotion": face.top_emotion,
        "scores": {k: round(v, 4) for k, v in face.scores_by_name().items()},
        "valence": round(face.valence, 4),
        "arousal": round(face.arousal, 4),
        "attention": round(face.attention, 4),
    }


def analyze_image_file(analyzer: FaceAnalyzer, path: Path,
                       annotate: Path | None) -> list[dict[str, Any]]:
    image = read_image(path)
    if image is None:
        raise InputError(f"{path}: not an image file")
    try:
        faces = analyzer.analyze_image(image)
    except ImageError as exc:
        raise InputError(f"{path}: {exc}") from exc
    if annotate is not None:
        import cv2

        from face_core.image import to_bgr8

        if not cv2.imwrite(str(annotate), draw_faces(to_bgr8(image), faces)):
            raise InputError(f"{annotate}: cannot write an image there")
    return [{"file": str(path), **face_record(f)} for f in faces]


def analyze_video_file(analyzer: FaceAnalyzer, path: Path, annotate: Path | None,
                       sample_fps: float, progress: bool) -> Iterator[dict[str, Any]]:
    reader = VideoReader(path)
    writer = (VideoWriter(annotate, reader.fps, reader.width, reader.height)
              if annotate is not None else None)
    stream = analyzer.new_stream()
    next_t = 0.0
    faces: list[FaceResult] = []
    bar = tqdm(total=round(reader.duration_s, 1) or None, unit="s", desc=path.name,
               disable=not progress or reader.duration_s < 10, file=sys.stderr, leave=False)
    try:
        for frame in reader.frames():
            if frame.time_s + 1e-6 >= next_t:
                next_t = frame.time_s + 1.0 / sample_fps
                faces = analyzer.analyze_batch([(stream, frame.bgr)])[0]
                for f in faces:
                    yield {"file": str(path), "time_s": round(frame.time_s, 3),
                           "frame": frame.index, **face_record(f)}
                bar.n = round(min(frame.time_s, bar.total or frame.time_s), 1)
                bar.refresh()
            if writer is not None:
                writer.write(draw_faces(frame.bgr, faces))
    finally:
        bar.close()
        reader.close()
        if writer is not None:
            writer.close()
    if reader.truncated:
        log.warning("%s: video is truncated; analyzed what could be decoded", path)
        print(f"warning: {path}: video is truncated; analyzed what could be decoded",
              file=sys.stderr)


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def annotate_target(annotate: Path | None, path: Path, n_inputs: int, video: bool) -> Path | None:
    if annotate is None:
        return None
    if n_inputs == 1 and not annotate.is_dir():
        return annotate
    annotate.mkdir(parents=True, exist_ok=True)
    return annotate / (path.stem + "_annotated" + (".mp4" if video else ".png"))


def run_analyze(paths: list[Path], analyzer_factory: Callable[[], FaceAnalyzer], *,
                annotate: Path | None, sample_fps: float, out: TextIO) -> int:
    """Analyze each path; print one JSON object per face. Returns the number of failures."""
    for p in paths:  # fail fast on what can be checked without the model
        if not p.exists():
            print(f"error: {p}: no such file", file=sys.stderr)
    existing = [p for p in paths if p.exists()]
    failures = len(paths) - len(existing)
    if not existing:
        return failures
    analyzer = analyzer_factory()
    for path in existing:
        try:
            if path.is_dir():
                raise InputError(f"{path}: is a directory, expected an image or video file")
            image_like = is_image_path(path)
            records: Any
            if image_like or read_image(path) is not None:
                target = annotate_target(annotate, path, len(paths), video=False)
                records = analyze_image_file(analyzer, path, target)
            else:
                target = annotate_target(annotate, path, len(paths), video=True)
                records = analyze_video_file(analyzer, path, target, sample_fps,
                                             progress=sys.stderr.isatty())
            for record in records:
                out.write(json.dumps(record) + "\n")
            out.flush()
        except ConfbotError as exc:
            failures += 1
            print(f"error: {exc}", file=sys.stderr)
        except MemoryError:
            failures += 1
            print(f"error: {path}: not enough memory to decode this file", file=sys.stderr)
    return failures
