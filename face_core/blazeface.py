"""BlazeFace (MediaPipe's short-range face detector, a 128x128 CNN) run through LiteRT.

The model file is MediaPipe's `face_detection_short_range.tflite`; face_core is handed its
bytes (confbot finds the file, see `confbot.vision`). What is worked out here is what
MediaPipe's graph around the model does: the SSD anchor grid, decoding the regressors into
boxes and keypoints, and weighted non-maximum suppression. Reference: Bazarevsky et al.,
"BlazeFace: Sub-millisecond Neural Face Detection on Mobile GPUs" (2019), and the anchor
and decoder options of MediaPipe's face_detection_short_range graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from face_core.detect import FaceDetector
from face_core.errors import ArtifactError
from face_core.preprocess import square_region
from face_core.types import Box, Detection, iou_xywh

INPUT_SIDE = 128
# The short-range graph's anchors, (stride, anchors a cell): a 16x16 grid with 2 anchors a
# cell, then an 8x8 grid with 6 (three layers of stride 16 merged). Every anchor is a unit
# square, so the regressors are offsets in input pixels from the anchor's centre.
ANCHOR_GRIDS = ((8, 2), (16, 6))
# Keypoints, in the model's order.
RIGHT_EYE, LEFT_EYE, NOSE_TIP = 0, 1, 2
KEYPOINTS = 6


def anchor_centres(side: int = INPUT_SIDE, grids: tuple[tuple[int, int], ...] = ANCHOR_GRIDS
                   ) -> np.ndarray:
    """(N, 2) anchor centres (x, y) in [0, 1], in the order of the model's outputs."""
    rows = []
    for stride, per_cell in grids:
        cells = side // stride
        ys, xs = np.mgrid[0:cells, 0:cells]
        centres = np.stack([(xs.ravel() + 0.5) / cells, (ys.ravel() + 0.5) / cells], axis=1)
        rows.append(np.repeat(centres, per_cell, axis=0))
    return np.concatenate(rows).astype(np.float32)


ANCHORS = anchor_centres()


@dataclass(frozen=True, eq=False)
class RawFace:
    """A decoded face before suppression, in the input's unit square."""

    cx: float
    cy: float
    w: float
    h: float
    score: float
    keypoints: np.ndarray  # (6, 2)


def decode(regressors: np.ndarray, logits: np.ndarray, anchors: np.ndarray, *,
           threshold: float, side: int = INPUT_SIDE) -> list[RawFace]:
    """The anchors whose score beats `threshold`, decoded (regressors (N, 16), logits (N,))."""
    scores = 1.0 / (1.0 + np.exp(-np.clip(logits.astype(np.float64), -100.0, 100.0)))
    # A broken model's non-finite outputs are no face, not an error.
    keep = np.flatnonzero((scores > threshold) & np.isfinite(regressors).all(axis=1))
    out = []
    for i in keep:
        r = regressors[i] / side
        ax, ay = anchors[i]
        kps = r[4:4 + 2 * KEYPOINTS].reshape(KEYPOINTS, 2) + anchors[i]
        out.append(RawFace(float(r[0] + ax), float(r[1] + ay), float(r[2]), float(r[3]),
                           float(scores[i]), kps))
    return out


def _iou(a: RawFace, b: RawFace) -> float:
    return iou_xywh((a.cx - a.w / 2, a.cy - a.h / 2, a.w, a.h),
                    (b.cx - b.w / 2, b.cy - b.h / 2, b.w, b.h))


def weighted_suppression(faces: list[RawFace], overlap: float = 0.3) -> list[RawFace]:
    """One face per cluster of overlapping candidates: the best one's score, and the
    score-weighted mean of the cluster's boxes and keypoints (steadier than keeping one)."""
    remaining = sorted(faces, key=lambda f: f.score, reverse=True)
    out = []
    while remaining:
        best = remaining[0]
        in_cluster = [f is best or _iou(best, f) > overlap for f in remaining]
        cluster = [f for f, c in zip(remaining, in_cluster, strict=True) if c]
        remaining = [f for f, c in zip(remaining, in_cluster, strict=True) if not c]
        weights = np.array([f.score for f in cluster])
        weights /= weights.sum()
        boxes = np.array([(f.cx, f.cy, f.w, f.h) for f in cluster])
        cx, cy, w, h = (float(v) for v in weights @ boxes)
        kps = np.tensordot(weights, np.stack([f.keypoints for f in cluster]), axes=1)
        out.append(RawFace(cx, cy, w, h, best.score, kps))
    return out


def _same_face(a: Box, b: Box) -> bool:
    """Whether two boxes frame one face: they overlap well, or one's centre lies inside the
    other (a finder's box inside a larger BlazeFace box has a low IoU with it)."""
    if a.iou(b) > 0.3:
        return True
    ax, ay = a.x + a.w / 2, a.y + a.h / 2
    bx, by = b.x + b.w / 2, b.y + b.h / 2
    return (b.x <= ax <= b.x + b.w and b.y <= ay <= b.y + b.h) or \
        (a.x <= bx <= a.x + a.w and a.y <= by <= a.y + a.h)


def _gray8(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 3:  # a BGR frame, as Haar also takes
        frame = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    if frame.dtype != np.uint8:
        raise ValueError(f"expected an 8-bit frame, got {frame.dtype}")
    return frame


class BlazeFaceDetector:
    """MediaPipe's short-range BlazeFace. `model_content` is the .tflite file's bytes.

    The model sees the whole frame shrunk to 128x128, so on its own it finds only faces that
    fill a good part of the frame (about a fifth of its longer side or more). `finder`, a
    detector that works down to small faces (Haar, to its `min_face_px`), proposes the
    smaller ones. Each proposal that BlazeFace has not found is looked at again in a window
    twice its size, where the face fills half of BlazeFace's input as in its training, and
    BlazeFace's box replaces the proposal when one of about its size (half to twice) is found
    there. A proposal it cannot confirm is kept as it is; one on a face already found is
    dropped.

    BlazeFace's box runs from the brows to the chin; the classifier was trained on faces
    framed as in FER2013 (forehead to chin, a little wider). `box_scale` (times the box's
    side) and `box_shift` (times the new side, downwards) turn the one into the other; the
    defaults were measured on FER2013's Training faces (tools/detector-framing.py).
    """

    name = "blazeface"

    def __init__(self, model_content: bytes, *, finder: FaceDetector | None = None,
                 score_threshold: float = 0.5, min_face_px: int = 24,
                 box_scale: float = 1.19, box_shift: float = -0.067, threads: int = 1) -> None:
        from ai_edge_litert.interpreter import Interpreter

        try:
            self._interp = Interpreter(model_content=model_content, num_threads=threads)
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ArtifactError(f"not a loadable BlazeFace model ({exc})") from exc
        inputs = self._interp.get_input_details()
        outs = sorted(self._interp.get_output_details(), key=lambda d: int(d["shape"][-1]))
        if len(inputs) != 1:
            raise ArtifactError(f"model is not BlazeFace short-range: {len(inputs)} inputs, not 1")
        inp = inputs[0]
        if (tuple(inp["shape"]) != (1, INPUT_SIDE, INPUT_SIDE, 3) or inp["dtype"] != np.float32
                or len(outs) != 2
                or tuple(outs[0]["shape"]) != (1, len(ANCHORS), 1)
                or tuple(outs[1]["shape"]) != (1, len(ANCHORS), 4 + 2 * KEYPOINTS)):
            raise ArtifactError(
                "model is not BlazeFace short-range (float32 input 1x128x128x3, outputs 1x896x1 "
                f"and 1x896x16); its input is {inp['shape'].tolist()} {np.dtype(inp['dtype'])}")
        self._input = inp["index"]
        self._logits, self._regressors = outs[0]["index"], outs[1]["index"]
        self._finder = finder
        self._threshold = score_threshold
        self._min_face_px = min_face_px
        self._box_scale = box_scale
        self._box_shift = box_shift

    def detect(self, gray: np.ndarray) -> list[Detection]:
        gray = _gray8(gray)
        return self._add_proposals(gray, self._whole(gray))

    def detect_near(self, gray: np.ndarray) -> list[Detection]:
        """In a window around a tracked face, which fills about half of it (BlazeFace's
        best size), its own view suffices; the finder runs only when that finds nothing."""
        gray = _gray8(gray)
        return self._whole(gray) or self._add_proposals(gray, [])

    def _add_proposals(self, gray: np.ndarray, found: list[Detection]) -> list[Detection]:
        """`found` and the finder's proposals it lacks, each confirmed by BlazeFace if it can."""
        if self._finder is None:
            return found
        for proposal in self._finder.detect(gray):
            if any(_same_face(proposal.box, f.box) for f in found):
                continue
            confirmed = self._confirm(gray, proposal)
            if not any(_same_face(confirmed.box, f.box) for f in found):
                found.append(confirmed)
        return found

    def _confirm(self, gray: np.ndarray, proposal: Detection) -> Detection:
        """BlazeFace's face in a window twice `proposal`'s size around it, or `proposal`."""
        box = proposal.box
        side = 2 * max(box.w, box.h)
        x0 = round(box.x + box.w / 2 - side / 2)
        y0 = round(box.y + box.h / 2 - side / 2)
        # Black beyond the frame, as the letterbox pads.
        window = square_region(gray, x0, y0, side, border=cv2.BORDER_CONSTANT)
        centre = side / 2
        proposed = max(box.w, box.h)
        near = [d for d in self._whole(window)
                if abs(d.box.x + d.box.w / 2 - centre) < side / 4
                and abs(d.box.y + d.box.h / 2 - centre) < side / 4
                and proposed / 2 <= d.box.w <= proposed * 2]
        if not near:
            return proposal
        best = max(near, key=lambda d: d.score)
        return Detection(Box(best.box.x + x0, best.box.y + y0, best.box.w, best.box.h),
                         score=best.score, frontal=best.frontal)

    def _whole(self, gray: np.ndarray) -> list[Detection]:
        """BlazeFace on the whole of `gray`, letterboxed into its input."""
        h, w = gray.shape[:2]
        side = max(h, w)
        top, left = (side - h) // 2, (side - w) // 2
        square = cv2.copyMakeBorder(gray, top, side - h - top, left, side - w - left,
                                    cv2.BORDER_CONSTANT, value=0)
        interp = cv2.INTER_AREA if side > INPUT_SIDE else cv2.INTER_LINEAR
        small = cv2.resize(square, (INPUT_SIDE, INPUT_SIDE), interpolation=interp)
        x = np.repeat(small[None, :, :, None], 3, axis=3).astype(np.float32) / 127.5 - 1.0
        self._interp.set_tensor(self._input, x)
        self._interp.invoke()
        regressors = self._interp.get_tensor(self._regressors)[0]
        logits = self._interp.get_tensor(self._logits)[0, :, 0]
        out: list[Detection] = []
        for f in weighted_suppression(decode(regressors, logits, ANCHORS,
                                             threshold=self._threshold)):
            face_side = self._box_scale * (f.w + f.h) / 2 * side
            if face_side < self._min_face_px:
                continue
            cx = f.cx * side - left
            cy = f.cy * side - top + self._box_shift * face_side
            kps = f.keypoints * side
            eye_dist = float(np.hypot(*(kps[LEFT_EYE] - kps[RIGHT_EYE]))) or 1.0
            nose_off = kps[NOSE_TIP][0] - (kps[RIGHT_EYE][0] + kps[LEFT_EYE][0]) / 2
            s = round(face_side)
            out.append(Detection(Box(round(cx - face_side / 2), round(cy - face_side / 2), s, s),
                                 score=f.score, frontal=abs(float(nose_off)) / eye_dist < 0.35))
        return out
