"""Consistent distillation: the teacher scores the very face the student is shown.

With `distill_mode = "fixed"` a run's teacher scores each training face once, before the first
epoch, on its clean views; the student then learns those scores for whatever rotated, zoomed,
shifted, erased version of the face a step shows it, so a face half erased still carries the
scores of the whole face. Beyer et al. ("Knowledge distillation: A good teacher is patient and
consistent", CVPR 2022) found that distillation works best when teacher and student see the
same augmented view ("function matching"). With `distill_mode = "consistent"` the teachers'
float32 networks sit inside the training graph, frozen and in inference mode, after the
augmentation: the training model outputs the student's scores and the teachers' mean side by
side, and `ConsistentDistillation` mixes the teachers' half into the targets each step.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import keras
from keras import ops

from confbot.errors import ConfigError, ModelError
from confbot.modeling.architecture import N_CLASSES, ArchitectureConfig, build_backbone


def _split(y_pred: keras.KerasTensor) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """The training model's output: the student's scores, then the teachers' mean."""
    return y_pred[:, :N_CLASSES], y_pred[:, N_CLASSES:]


@keras.saving.register_keras_serializable(package="confbot")
class ConsistentDistillation(keras.losses.Loss):
    """Cross-entropy of the student's scores against (1 - weight) x label + weight x the
    teachers' scores on the same view (softened by `temperature`: p ** (1 / T), renormalised),
    the mixture then smoothed by `label_smoothing`, as the fixed targets are by Keras' loss."""

    def __init__(self, weight: float, temperature: float = 1.0, label_smoothing: float = 0.0,
                 **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.weight, self.temperature = float(weight), float(temperature)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true: keras.KerasTensor, y_pred: keras.KerasTensor) -> keras.KerasTensor:
        student, teacher = _split(ops.cast(y_pred, "float32"))
        teacher = ops.stop_gradient(teacher)
        soft = ops.power(ops.clip(teacher, 1e-8, 1.0), 1.0 / self.temperature)
        soft = soft / ops.sum(soft, axis=-1, keepdims=True)
        target = (1.0 - self.weight) * ops.cast(y_true, "float32") + self.weight * soft
        target = target * (1.0 - self.label_smoothing) + self.label_smoothing / N_CLASSES
        return keras.losses.categorical_crossentropy(target, student)

    def get_config(self) -> dict[str, object]:
        return {**super().get_config(), "weight": self.weight, "temperature": self.temperature,
                "label_smoothing": self.label_smoothing}


@keras.saving.register_keras_serializable(package="confbot")
def student_accuracy(y_true: keras.KerasTensor, y_pred: keras.KerasTensor) -> keras.KerasTensor:
    """Top-1 agreement of the student's half of the output with the (possibly mixed) label."""
    student, _ = _split(y_pred)
    return ops.cast(ops.equal(ops.argmax(y_true, axis=-1), ops.argmax(student, axis=-1)),
                    "float32")


def student_accuracy_metric() -> keras.metrics.Metric:
    """`student_accuracy` as the run's "accuracy", the name its logs and history go by."""
    return keras.metrics.MeanMetricWrapper(student_accuracy, name="accuracy")


def teacher_networks(manifests: Sequence[Path],
                     student: ArchitectureConfig) -> tuple[list[keras.Model], list[str]]:
    """The teachers' float32 weights (each manifest's `weights.h5`) in networks built under
    the caller's dtype policy, frozen; and each one's weights sha256. A teacher must take the
    student's view: the same crop size."""
    from confbot.modeling.export import load_export

    networks, shas = [], []
    for i, manifest in enumerate(manifests):
        if manifest.suffix != ".json":
            raise ConfigError(f"teacher: {manifest}: distill_mode = \"consistent\" runs the "
                              "teacher's network, so it must be an export manifest with its "
                              "weights beside it, not a scores file")
        try:
            loaded = load_export(manifest)
        except ModelError as exc:
            raise ConfigError(f"teacher: {exc}") from exc
        if loaded.arch.crop_size != student.crop_size:
            raise ConfigError(f"teacher: {manifest} sees {loaded.arch.crop_size}-pixel crops, the "
                              f"student {student.crop_size}: they must see the same view")
        net = build_backbone(loaded.arch, name=f"teacher{i}")
        net.set_weights(loaded.backbone.get_weights())
        net.trainable = False
        networks.append(net)
        shas.append(loaded.weights_sha256)
    return networks, shas
