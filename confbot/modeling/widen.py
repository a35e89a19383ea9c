"""Start a wider network from a trained narrower one, without losing what it learnt.

A function-preserving widening (Net2WiderNet, Chen, Goodfellow and Shlens, "Net2Net:
Accelerating learning via knowledge transfer", ICLR 2016): each new channel of a layer is a
copy of a randomly chosen existing one (its kernel, and its batch-norm scale, shift and
running statistics), and the next layer divides the weights it reads from every copy of a
channel by the number of copies, so the sum it computes is unchanged. The widened network
gives the narrow one's scores, so training it continues from the narrow network's accuracy
instead of starting again from random weights. A little noise on the copied kernels
(`noise`, a fraction of each kernel's standard deviation) breaks the symmetry between a
channel and its copies, which otherwise receive identical gradients.

Only the widths grow: the number of stages, of convolutions per stage and the layer order
must match (`check_widenable`). Both networks are backbones from `build_backbone`, matched
by layer name.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from confbot.errors import ConfigError
from confbot.modeling.architecture import ArchitectureConfig


def check_widenable(src: ArchitectureConfig, dst: ArchitectureConfig) -> None:
    """Raise ConfigError unless `dst` is `src` with equal or larger widths."""
    if len(src.widths) != len(dst.widths) or src.convs_per_stage != dst.convs_per_stage:
        raise ConfigError(
            f"cannot widen a network of {len(src.widths)} stages x {src.convs_per_stage} "
            f"convolutions into one of {len(dst.widths)} x {dst.convs_per_stage}: "
            "only the widths may change")
    narrower = [(s, d) for s, d in zip(src.widths, dst.widths, strict=True) if d < s]
    if narrower or dst.head_units < src.head_units:
        raise ConfigError(
            f"cannot narrow a network: widths {list(src.widths)} head {src.head_units} -> "
            f"{list(dst.widths)} head {dst.head_units}; every width must stay or grow")


def _mapping(old: int, new: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Which old unit each new unit copies (the first `old` are themselves), and copy counts."""
    g = np.concatenate([np.arange(old), rng.integers(0, old, new - old)])
    return g, np.bincount(g, minlength=old).astype(np.float32)


def widen_backbone(src: Any, dst: Any, src_arch: ArchitectureConfig,
                   dst_arch: ArchitectureConfig, *, seed: int, noise: float = 0.0) -> None:
    """Set `dst`'s weights to a widened copy of `src`'s (both built by `build_backbone`)."""
    check_widenable(src_arch, dst_arch)
    rng = np.random.default_rng(seed)
    g_in, counts_in = np.zeros(1, np.int64), np.ones(1, np.float32)  # the grey input channel

    def copy_out(kernel: np.ndarray, g_out: np.ndarray, n_old: int) -> np.ndarray:
        if noise > 0 and len(g_out) > n_old:
            extra = kernel[..., n_old:]
            kernel[..., n_old:] = extra + rng.normal(0, noise * kernel.std(), extra.shape)
        return kernel

    def widen_bn(name: str, g: np.ndarray) -> None:
        dst.get_layer(name).set_weights([v[g] for v in src.get_layer(name).get_weights()])

    for s, width in enumerate(dst_arch.widths):
        for i in range(dst_arch.convs_per_stage):
            (k,) = src.get_layer(f"s{s}_conv{i}").get_weights()
            g_out, counts_out = _mapping(k.shape[-1], width, rng)
            k = k[:, :, g_in, :] / counts_in[g_in][None, None, :, None]
            dst.get_layer(f"s{s}_conv{i}").set_weights([copy_out(k[..., g_out], g_out,
                                                                 len(counts_out))])
            widen_bn(f"s{s}_bn{i}", g_out)
            g_in, counts_in = g_out, counts_out
    (k,) = src.get_layer("fc").get_weights()
    g_out, counts_out = _mapping(k.shape[-1], dst_arch.head_units, rng)
    k = k[g_in, :] / counts_in[g_in][:, None]
    dst.get_layer("fc").set_weights([copy_out(k[:, g_out], g_out, len(counts_out))])
    widen_bn("fc_bn", g_out)
    k, b = src.get_layer("scores").get_weights()
    dst.get_layer("scores").set_weights([k[g_out, :] / counts_out[g_out][:, None], b])
