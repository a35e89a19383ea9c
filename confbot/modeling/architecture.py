"""The emotion CNN: a VGG-style network sized for real-time inference on one CPU core.

Why this shape: FER2013 faces are 48x48 grayscale. Training on random 40x40 crops (and
classifying a centre crop at inference) is the augmentation that the best published VGG
variants on FER2013 use, and it cuts the multiply-adds by 30% against full 48x48 input.
Four stages of two 3x3 convolutions with batch norm (widths 32 to 256) cost about 82 M
multiply-adds per face, close to the seed CNN's 77 M, but with far fewer parameters
(1.2 M against 2.35 M) and a global-average-pooled head that overfits less.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import keras
from keras import layers

N_CLASSES = 7


# Every layer takes its dtype from Keras' global policy when it is built: whoever builds these
# networks in a given precision does it inside `dtype_policy`, which leaves the policy as it was.
def policy_name(bf16: bool | None) -> str:
    """Keras' dtype policy for a network in mixed bfloat16 or not."""
    return "mixed_bfloat16" if bf16 else "float32"


@contextmanager
def kept_dtype_policy() -> Iterator[None]:
    """Keras' global dtype policy as it was before the block put back after it, however the
    block ends."""
    before = keras.mixed_precision.global_policy()
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(before)


@contextmanager
def dtype_policy(bf16: bool | None) -> Iterator[None]:
    """Keras' global dtype policy set by `policy_name(bf16)` for the block only."""
    with kept_dtype_policy():
        keras.mixed_precision.set_global_policy(policy_name(bf16))
        yield


@dataclass(frozen=True, kw_only=True)
class ArchitectureConfig:
    """Shape of the network."""

    input_size: int = 48
    crop_size: int = 40
    widths: tuple[int, ...] = (32, 64, 128, 256)
    convs_per_stage: int = 2
    head_units: int = 256
    dropout: float = 0.4


def _stage(x: keras.KerasTensor, width: int, n_convs: int, name: str) -> keras.KerasTensor:
    for i in range(n_convs):
        x = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"{name}_conv{i}")(x)
        x = layers.BatchNormalization(name=f"{name}_bn{i}")(x)
        x = layers.ReLU(name=f"{name}_relu{i}")(x)
    return x


def build_backbone(cfg: ArchitectureConfig, name: str = "backbone") -> keras.Model:
    """The classifier proper: (crop, crop, 1) floats in [0, 1] to 7 softmax scores."""
    inp = keras.Input((cfg.crop_size, cfg.crop_size, 1), name="face")
    x = inp
    for s, width in enumerate(cfg.widths):
        x = _stage(x, width, cfg.convs_per_stage, name=f"s{s}")
        if s < len(cfg.widths) - 1:
            x = layers.MaxPooling2D(2, name=f"s{s}_pool")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(cfg.dropout, name="drop0")(x)
    x = layers.Dense(cfg.head_units, use_bias=False, name="fc")(x)
    x = layers.BatchNormalization(name="fc_bn")(x)
    x = layers.ReLU(name="fc_relu")(x)
    x = layers.Dropout(cfg.dropout, name="drop1")(x)
    out = layers.Dense(N_CLASSES, activation="softmax", dtype="float32", name="scores")(x)
    return keras.Model(inp, out, name=name)


def build_inference_model(backbone: keras.Model, cfg: ArchitectureConfig) -> keras.Model:
    """Full-size face in, scores out: centre-crops to the size the backbone was trained on."""
    inp = keras.Input((cfg.input_size, cfg.input_size, 1), name="face48")
    x = layers.CenterCrop(cfg.crop_size, cfg.crop_size, name="center_crop")(inp)
    return keras.Model(inp, backbone(x), name="emotion_cnn")


# The sides (pixels) a face given low resolution in training is shrunk to, one drawn per face:
# a face a tenth to two thirds of a 48-pixel crop's detail, as small tiles and soft video give.
LOW_RES_SIDES = (16, 20, 24, 32)


@keras.saving.register_keras_serializable(package="confbot")
class RandomLowResolution(layers.Layer):
    """In training, each face with probability `rate` is shrunk to one of `sides` pixels a side
    (drawn at random, antialiased) and scaled back up (bilinear); at inference it passes faces
    through. Keras has no such layer: RandomZoom keeps the detail, RandomGaussianBlur one blur."""

    def __init__(self, rate: float, sides: tuple[int, ...] = LOW_RES_SIDES,
                 seed: int | None = None, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.rate, self.sides, self.seed = float(rate), tuple(int(s) for s in sides), seed
        self._generator = keras.random.SeedGenerator(seed)
        # Its antialiased resize (TF's ScaleAndTranslate) has no XLA kernel: Keras must not
        # jit-compile a model holding it, as it would on a GPU (RandomZoom says the same).
        self.supports_jit = False

    def call(self, x: keras.KerasTensor, training: bool | None = None) -> keras.KerasTensor:
        if not training or self.rate <= 0:
            return x
        from keras import ops

        n, side = ops.shape(x)[0], x.shape[1]
        shrink = keras.random.uniform((n,), seed=self._generator) < self.rate
        pick = ops.floor(keras.random.uniform((n,), seed=self._generator) * len(self.sides))
        out = x
        for k, small in enumerate(self.sides):
            # Only the faces drawn for this side are resized (a share of the batch, not all of
            # it four times); each face's change is added back where it came from.
            idx = ops.where(ops.logical_and(shrink, ops.equal(pick, k)))[0]
            faces = ops.take(x, idx, axis=0)
            low = ops.image.resize(faces, (small, small), interpolation="bilinear", antialias=True)
            back = ops.image.resize(low, (side, x.shape[2]), interpolation="bilinear")
            out = out + ops.scatter(idx[:, None], back - faces, ops.shape(x))
        return out

    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return input_shape

    def get_config(self) -> dict[str, object]:
        return {**super().get_config(), "rate": self.rate, "sides": list(self.sides),
                "seed": self.seed}


@keras.saving.register_keras_serializable(package="confbot")
class TakeChannel(layers.Layer):
    """Channel `index` of an image batch, kept as a one-channel image."""

    def __init__(self, index: int, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.index = int(index)

    def call(self, x: keras.KerasTensor) -> keras.KerasTensor:
        return x[..., self.index:self.index + 1]

    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (*input_shape[:-1], 1)

    def get_config(self) -> dict[str, object]:
        return {**super().get_config(), "index": self.index}


def build_training_model(
    backbone: keras.Model, cfg: ArchitectureConfig, *, seed: int, erase_prob: float,
    shift_pixels: int = 4, zoom: tuple[float, float] = (0.1, 0.1), low_res_prob: float = 0.0,
    teachers: Sequence[keras.Model] = (),
) -> keras.Model:
    """The backbone behind the augmentation layers, which are active only in training.

    A backbone that sees a crop of the face is shifted by where the random crop falls. One
    that sees the whole face (`crop_size == input_size`) is shifted by up to `shift_pixels`
    instead, the edge reflected into the gap. `zoom` is how far in and out the face is scaled
    at random, as shares of its side. `low_res_prob` is the share of faces given low
    resolution (`RandomLowResolution`), before the other changes.

    The augmentation works in float32 whatever the global policy, and the backbone casts its
    output to its own compute dtype. Built under mixed bfloat16, rotated and zoomed faces came
    out rounded (0.2 grey levels from float32 on average, at most 1), and a run's augmentation
    depended on whether `init_weights` had loaded an export (which left the policy at float32).

    With `teachers` (frozen networks of the same crop size; `confbot.modeling.distill`), the
    model outputs the backbone's 7 scores followed by the teachers' mean scores on the same
    augmented face, run in inference mode (no dropout, batch norm's stored statistics). The
    teachers see the face before `low_res_prob` takes its detail away, through the very same
    rotation, zoom, crop and erasing (the two ride through them as two channels of one image):
    networks trained on sharp faces score a shrunk one poorly, and a student taught those
    scores learned to (stop 43: 6.5 points lost on faces 20 pixels tall).
    """
    inp = keras.Input((cfg.input_size, cfg.input_size, 1), name="face48")
    with dtype_policy(False):
        x = layers.RandomFlip("horizontal", seed=seed, name="aug_flip")(inp)
        sharp = x
        if low_res_prob > 0:
            x = RandomLowResolution(low_res_prob, seed=seed + 5, name="aug_low_res")(x)
        if teachers:
            x = layers.Concatenate(name="student_teacher_views")([x, sharp])
        x = layers.RandomRotation(10 / 360, fill_mode="reflect", seed=seed + 1, name="aug_rot")(x)
        x = layers.RandomZoom((-zoom[0], zoom[1]), fill_mode="reflect", seed=seed + 2, name="aug_zoom")(x)
        if cfg.crop_size < cfg.input_size:
            # Each face its own crop: a whole-pixel shift of up to the margin, then the centre
            # crop. (Keras' RandomCrop takes one offset for the whole batch, and at inference
            # returns its input uncropped, which the JAX trainer's build step trips over.)
            # The shift is drawn from a continuous range and rounded to the nearest pixel, so the
            # range reaches half a pixel past the margin: each whole offset then takes an equal
            # share, where a range ending at the margin gives the two outermost half as much.
            share = ((cfg.input_size - cfg.crop_size) / 2 + 0.5) / cfg.input_size
            x = layers.RandomTranslation(share, share, fill_mode="reflect", interpolation="nearest",
                                         seed=seed + 3, name="aug_crop_shift")(x)
            x = layers.CenterCrop(cfg.crop_size, cfg.crop_size, name="aug_crop")(x)
        elif shift_pixels > 0:
            share = shift_pixels / cfg.input_size
            x = layers.RandomTranslation(share, share, fill_mode="reflect", seed=seed + 3,
                                         name="aug_shift")(x)
        if erase_prob > 0:
            x = layers.RandomErasing(
                factor=erase_prob, scale=(0.02, 0.2), value_range=(0.0, 1.0), seed=seed + 4,
                name="aug_erase",
            )(x)
    if teachers:
        x, sharp = TakeChannel(0, name="student_view")(x), TakeChannel(1, name="teacher_view")(x)
    scores = backbone(x)
    if teachers:
        taught = [t(sharp, training=False) for t in teachers]
        mean = taught[0] if len(taught) == 1 else layers.Average(name="teachers", dtype="float32")(taught)
        scores = layers.Concatenate(name="student_teachers", dtype="float32")([scores, mean])
    return keras.Model(inp, scores, name="emotion_cnn_train")
