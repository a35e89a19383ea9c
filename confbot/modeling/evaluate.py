"""`confbot model evaluate`: accuracy and speed of a model through the product's runtime."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from confbot.modeling.data import FaceSet
from face_core import EMOTIONS, Box, EmotionClassifier, FaceDetector

if TYPE_CHECKING:
    from confbot.modeling.conditions import Condition


@dataclass(frozen=True)
class Evaluation:
    n: int
    accuracy: float
    per_class_recall: dict[str, float]
    confusion: list[list[int]]  # rows: true class, columns: predicted
    ms_per_face: float
    ms_per_face_batch1: float
    threads: int
    tta: str
    tta_margin: float
    all_views_share: float  # of the faces, those the margin sent through every view of `tta`

    def as_dict(self) -> dict[str, Any]:
        return {
            "n": self.n, "accuracy": round(self.accuracy, 4),
            "per_class_recall": {k: round(v, 4) for k, v in self.per_class_recall.items()},
            "confusion_matrix": self.confusion, "classes": list(EMOTIONS),
            "ms_per_face": round(self.ms_per_face, 3),
            "ms_per_face_batch1": round(self.ms_per_face_batch1, 3),
            "threads": self.threads, "tta": self.tta, "tta_margin": self.tta_margin,
            "all_views_share": round(self.all_views_share, 4),
        }


def resize_faces(x: np.ndarray, size: int) -> np.ndarray:
    if x.shape[1:] == (size, size):
        return x
    import cv2

    return np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_LINEAR) for f in x])


def classify_all(classifier: EmotionClassifier, faces: np.ndarray, chunk: int = 64,
                 progress: str | None = None) -> np.ndarray:
    """(N, 7) scores for uint8 faces of any square size, resized to the model's, in chunks.
    With `progress`, a bar of that name on stderr counts the faces done (scoring a training
    set with ten crops takes most of an hour on a CPU without VNNI)."""
    from tqdm import tqdm

    faces = resize_faces(faces, classifier.input_size)
    scores = []
    with tqdm(total=len(faces), desc=progress, unit="face", disable=progress is None,
              mininterval=5.0) as bar:
        for i in range(0, len(faces), chunk):
            scores.append(classifier.classify(faces[i:i + chunk]))
            bar.update(len(scores[-1]))
    return np.concatenate(scores)


def time_per_face(classifier: EmotionClassifier, faces: np.ndarray, batch: int,
                  min_seconds: float = 2.0) -> float:
    """Milliseconds per face over calls on successive batches of `batch` faces, cycling through
    `faces` in a fixed shuffled order, for at least `min_seconds`: the mean over the calls.
    Successive batches, not one batch again and again, because with a `tta_margin` below 1 a
    batch's cost depends on how many of its faces the first view leaves unsure; shuffled,
    because on a slow CPU the time runs out after a few hundred faces, which should be a sample
    of the set rather than its head."""
    faces = faces[np.random.default_rng(0).permutation(len(faces))]
    chunks = [faces[i:i + batch] for i in range(0, len(faces) - batch + 1, batch)] or [faces]
    classifier.classify(chunks[0])  # warm-up: allocates tensors for this batch size
    times: list[float] = []
    start = time.perf_counter()
    while time.perf_counter() - start < min_seconds or len(times) < 20:
        chunk = chunks[len(times) % len(chunks)]
        t0 = time.perf_counter()
        classifier.classify(chunk)
        times.append((time.perf_counter() - t0) / len(chunk))
    return float(np.mean(times) * 1000)


def evaluate(classifier: EmotionClassifier, data: FaceSet, *, threads: int) -> Evaluation:
    faces = resize_faces(data.x, classifier.input_size)
    seen, in_all = classifier.faces_classified, classifier.faces_in_all_views
    preds = classify_all(classifier, faces).argmax(1)
    all_views_share = ((classifier.faces_in_all_views - in_all)
                       / max(classifier.faces_classified - seen, 1))
    k = len(EMOTIONS)
    confusion = np.zeros((k, k), np.int64)
    np.add.at(confusion, (data.y, preds), 1)
    support = confusion.sum(1)
    recall = {e: float(confusion[i, i] / support[i]) if support[i] else 0.0
              for i, e in enumerate(EMOTIONS)}
    return Evaluation(
        n=len(data), accuracy=float((preds == data.y).mean()), per_class_recall=recall,
        confusion=confusion.tolist(), ms_per_face=time_per_face(classifier, faces, 8),
        ms_per_face_batch1=time_per_face(classifier, faces, 1), threads=threads,
        tta=classifier.tta, tta_margin=classifier.tta_margin, all_views_share=all_views_share,
    )


@dataclass(frozen=True)
class DetectorPath:
    """Accuracy when the product's own detector frames each face, against the data set's framing.

    FER2013 faces come framed by the data set's makers; in a call the detector's box frames
    them. The difference between the two accuracies on the same faces is what that costs.
    """

    detector: str  # the detector's kind (`FaceDetector.name`)
    n: int
    found: int  # faces for which the detector returned a box
    upscale: int
    margin: float  # the manifest's crop_margin, applied to each box as in the product
    box_side: dict[str, float]  # the box's side over the face's side: p10, median, p90
    accuracy_detector: float  # on the faces found, framed by the detector
    accuracy_dataset: float  # on the same faces, framed as the data set frames them

    @property
    def accuracy_all(self) -> float:
        """Right answers over all faces, a face the detector missed counting as wrong: what a
        call gets out of the detector and the model together."""
        return self.found * self.accuracy_detector / self.n if self.n else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"detector": self.detector, "n": self.n, "found": self.found,
                "found_share": round(self.found / self.n, 4) if self.n else 0.0,
                "upscale": self.upscale, "margin": self.margin,
                "box_side": {k: round(v, 3) for k, v in self.box_side.items()},
                "accuracy_detector": round(self.accuracy_detector, 4),
                "accuracy_dataset": round(self.accuracy_dataset, 4),
                "accuracy_all": round(self.accuracy_all, 4)}


def _call_frame(face: np.ndarray, upscale: int) -> np.ndarray:
    """A face scaled up `upscale` times and set in a frame twice its size, the edge replicated
    outwards (so the detector meets no hard border)."""
    import cv2

    side = face.shape[0] * upscale
    big = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC) if upscale > 1 else face
    pad = side // 2
    return cv2.copyMakeBorder(big, pad, pad, pad, pad, cv2.BORDER_REPLICATE)


@dataclass(frozen=True)
class DetectorBoxes:
    """Where a face detector framed each face of a set, as a call would meet it."""

    upscale: int
    found: np.ndarray  # indices of the faces the detector found
    boxes: list[Box]  # the box nearest the frame's centre, one per face found

    def crops(self, faces: np.ndarray, *, size: int, margin: float) -> np.ndarray:
        """(len(found), size, size) crops from the boxes, grown by `margin` as the product does."""
        from face_core.preprocess import crop_face

        if not self.boxes:
            return np.zeros((0, size, size), np.uint8)
        return np.stack([crop_face(_call_frame(faces[i], self.upscale), box, size=size, margin=margin)
                         for i, box in zip(self.found, self.boxes, strict=True)])

    def sides(self, face_side: int) -> np.ndarray:
        """Each box's side over the face's side in the frame."""
        return np.array([max(b.w, b.h) for b in self.boxes], np.float64) / (face_side * self.upscale)


def find_faces(detector: FaceDetector, faces: np.ndarray, *, upscale: int = 3) -> DetectorBoxes:
    """Run `detector` on each face as a call would meet it: scaled up `upscale` times, in a
    frame twice its size. Of several boxes the one nearest the centre counts."""
    if upscale < 1:
        raise ValueError(f"upscale must be at least 1, got {upscale}")
    found: list[int] = []
    boxes: list[Box] = []
    for i, face in enumerate(faces):
        frame = _call_frame(face, upscale)
        dets = detector.detect(frame)
        if not dets:
            continue
        centre = frame.shape[0] / 2
        best = min(dets, key=lambda d: (d.box.x + d.box.w / 2 - centre) ** 2
                   + (d.box.y + d.box.h / 2 - centre) ** 2)
        found.append(i)
        boxes.append(best.box)
    return DetectorBoxes(upscale=upscale, found=np.array(found, np.int64), boxes=boxes)


def through_detector(detector: FaceDetector, classifier: EmotionClassifier, data: FaceSet, *,
                     upscale: int = 3) -> DetectorPath:
    """Accuracy on the faces `detector` finds (see `find_faces`), cropped from its boxes with
    the model's margin, against the data set's framing of the same faces."""
    margin = classifier.manifest.crop_margin
    located = find_faces(detector, data.x, upscale=upscale)
    if not len(located.found):
        return DetectorPath(detector=detector.name, n=len(data), found=0, upscale=upscale,
                            margin=margin, box_side={},
                            accuracy_detector=0.0, accuracy_dataset=0.0)
    y = data.y[located.found]
    crops = located.crops(data.x, size=classifier.input_size, margin=margin)
    by_detector = classify_all(classifier, crops).argmax(1)
    by_dataset = classify_all(classifier, data.x[located.found]).argmax(1)
    p10, p50, p90 = np.percentile(located.sides(data.x.shape[1]), [10, 50, 90])
    return DetectorPath(
        detector=detector.name, n=len(data), found=len(located.found), upscale=upscale,
        margin=margin,
        box_side={"p10": float(p10), "median": float(p50), "p90": float(p90)},
        accuracy_detector=float((by_detector == y).mean()),
        accuracy_dataset=float((by_dataset == y).mean()),
    )


@dataclass(frozen=True)
class PairedComparison:
    """Two models' predictions on the same faces, and McNemar's exact test on where they differ."""

    n: int
    accuracy_a: float
    accuracy_b: float
    only_a: int  # faces model A gets right and model B wrong
    only_b: int
    p_value: float  # two-sided, exact binomial on the discordant faces

    def as_dict(self) -> dict[str, Any]:
        return {"n": self.n, "accuracy_a": round(self.accuracy_a, 4),
                "accuracy_b": round(self.accuracy_b, 4), "only_a": self.only_a,
                "only_b": self.only_b, "p_value": round(self.p_value, 4)}


def compare_predictions(pred_a: np.ndarray, pred_b: np.ndarray, y: np.ndarray) -> PairedComparison:
    """Paired comparison of two models' labels for the same faces (McNemar 1947, exact form).

    Only the faces one model gets right and the other wrong carry information; under the null
    hypothesis of equal accuracy each such face is a fair coin.
    """
    from scipy.stats import binomtest

    if not pred_a.shape == pred_b.shape == y.shape:
        raise ValueError(f"predictions and labels differ in shape: {pred_a.shape}, "
                         f"{pred_b.shape}, {y.shape}")
    right_a, right_b = pred_a == y, pred_b == y
    only_a, only_b = int((right_a & ~right_b).sum()), int((right_b & ~right_a).sum())
    p = binomtest(only_a, only_a + only_b).pvalue if only_a + only_b else 1.0
    return PairedComparison(n=len(y), accuracy_a=float(right_a.mean()),
                            accuracy_b=float(right_b.mean()), only_a=only_a, only_b=only_b,
                            p_value=float(p))


def format_report(ev: Evaluation) -> str:
    lines = [f"faces: {ev.n}", f"accuracy: {ev.accuracy:.4f}", "per-class recall:"]
    lines += [f"  {e:<9}{r:.3f}" for e, r in ev.per_class_recall.items()]
    lines.append("confusion matrix (rows: true, columns: predicted):")
    lines.append("          " + "".join(f"{e[:7]:>8}" for e in EMOTIONS))
    for e, row in zip(EMOTIONS, ev.confusion, strict=True):
        lines.append(f"  {e:<8}" + "".join(f"{v:>8}" for v in row))
    tta = (f", test-time augmentation {ev.tta!r} on {ev.all_views_share:.0%} of the faces "
           f"(margin {ev.tta_margin:g})" if ev.tta != "none" else "")
    lines.append(f"ms per face: {ev.ms_per_face:.3f} (batch 8), {ev.ms_per_face_batch1:.3f} "
                 f"(batch 1); {ev.threads} thread(s){tta}")
    return "\n".join(lines)


def format_detector_path(path: DetectorPath) -> str:
    if not path.found:
        return f"through the {path.detector} detector: no face found in {path.n}"
    side = path.box_side
    return (f"through the {path.detector} detector: {path.found} of {path.n} faces found "
            f"(scaled x{path.upscale}); box side / face side p10 {side['p10']:.2f}, median "
            f"{side['median']:.2f}, p90 {side['p90']:.2f}; accuracy on the faces found "
            f"{path.accuracy_detector:.4f} framed by the detector (margin {path.margin:g}), "
            f"{path.accuracy_dataset:.4f} framed as in the data set; right on "
            f"{path.accuracy_all:.4f} of all faces, a face not found counting as wrong")


def plot_confusion(ev: Evaluation, out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.array(ev.confusion, dtype=np.float64)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6.4, 5.6), dpi=120)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(EMOTIONS)), EMOTIONS, rotation=45, ha="right")
    ax.set_yticks(range(len(EMOTIONS)), EMOTIONS)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(EMOTIONS)):
        for j in range(len(EMOTIONS)):
            ax.text(j, i, f"{norm[i, j]:.2f}\n({int(cm[i, j])})", ha="center", va="center",
                    fontsize=7, color="white" if norm[i, j] > 0.5 else "black")
    ax.set_title(f"{title}\naccuracy {ev.accuracy:.2%} on {ev.n} faces")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


@dataclass(frozen=True)
class ConditionResult:
    """A model's accuracy on degraded faces, paired face by face with its accuracy on the same
    faces undegraded."""

    condition: str  # "name=level"
    what: str
    accuracy: float
    clean_accuracy: float
    lost: int  # faces right when clean and wrong when degraded
    gained: int
    p_value: float  # McNemar's exact test on `lost` against `gained`

    def as_dict(self) -> dict[str, Any]:
        return {"condition": self.condition, "what": self.what,
                "accuracy": round(self.accuracy, 4),
                "change_points": round(100 * (self.accuracy - self.clean_accuracy), 2),
                "lost": self.lost, "gained": self.gained, "p_value": round(self.p_value, 4)}


def under_conditions(classifier: EmotionClassifier, data: FaceSet,
                     conditions: list[Condition], *, seed: int = 0) -> tuple[float, list[ConditionResult]]:
    """Accuracy on the clean faces, then on the faces under each condition (degraded at the
    data set's size, then resized to the model's, as a call's crop would be)."""
    clean = classify_all(classifier, data.x).argmax(1)
    clean_accuracy = float((clean == data.y).mean())
    results = []
    for condition in conditions:
        degraded = classify_all(classifier, condition.apply(data.x, seed)).argmax(1)
        paired = compare_predictions(degraded, clean, data.y)
        results.append(ConditionResult(
            condition=condition.label, what=condition.describe(), accuracy=paired.accuracy_a,
            clean_accuracy=clean_accuracy, lost=paired.only_b, gained=paired.only_a,
            p_value=paired.p_value))
    return clean_accuracy, results


def format_conditions(model: str, clean_accuracy: float, results: list[ConditionResult]) -> str:
    lines = [f"model: {model}", f"  {'clean':<14}{clean_accuracy:.4f}"]
    lines += [f"  {r.condition:<14}{r.accuracy:.4f}  {100 * (r.accuracy - r.clean_accuracy):+6.2f} "
              f"points (lost {r.lost}, gained {r.gained}, p {r.p_value:.3g}): {r.what}"
              for r in results]
    return "\n".join(lines)
