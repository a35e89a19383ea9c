"""Start a network of other widths from a trained one, keeping as much of what it learnt.

Wider: a function-preserving widening (Net2WiderNet, Chen, Goodfellow and Shlens, "Net2Net:
Accelerating learning via knowledge transfer", ICLR 2016): each new channel of a layer is a
copy of a randomly chosen existing one (its kernel, and its batch-norm scale, shift and
running statistics), and the next layer divides the weights it reads from every copy of a
channel by the number of copies, so the sum it computes is unchanged. The widened network
gives the narrow one's scores, so training it continues from the narrow network's accuracy
instead of starting again from random weights. A little noise on the copied kernels
(`noise`, a fraction of each kernel's standard deviation) breaks the symmetry between a
channel and its copies, which otherwise receive identical gradients.

Narrower: channel pruning. A layer keeps the channels that carry the most into the next
layer, judged without data: batch norm makes a channel's pre-activation about
N(beta, gamma^2), so its mean output after the ReLU is beta * Phi(beta / |gamma|) +
|gamma| * phi(beta / |gamma|), and that mean is weighed by the norm of the next layer's
weights that read the channel (the filter-norm criterion of Li et al., "Pruning filters for
efficient ConvNets", ICLR 2017, with the activation estimated from batch norm's statistics
as in "Network Slimming", Liu et al., ICCV 2017). The pruned network is not the same
function; it is a start that fine-tuning (ideally distilled from the wide network) recovers
from far faster than from random weights.

Each width (and the head) may grow or shrink on its own; the number of stages, of
convolutions per stage and the layer order must match (`check_resizable`). Both networks are
backbones from `build_backbone`, matched by layer name.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from confbot.errors import ConfigError
from confbot.modeling.architecture import ArchitectureConfig


def check_resizable(src: ArchitectureConfig, dst: ArchitectureConfig) -> None:
    """Raise ConfigError unless `dst` is `src` with other widths only."""
    if len(src.widths) != len(dst.widths) or src.convs_per_stage != dst.convs_per_stage:
        raise ConfigError(
            f"cannot resize a network of {len(src.widths)} stages x {src.convs_per_stage} "
            f"convolutions into one of {len(dst.widths)} x {dst.convs_per_stage}: "
            "only the widths may change")
    if min(dst.widths, default=0) < 1 or dst.head_units < 1:
        raise ConfigError(f"widths {list(dst.widths)} head {dst.head_units}: every width "
                          "must be at least 1")


def mean_relu_output(bn_weights: list[np.ndarray]) -> np.ndarray:
    """Each channel's expected output after batch norm and ReLU, from the norm's own weights.

    The normalised input is about N(0, 1), so the pre-activation is N(beta, gamma^2), whose
    ReLU has mean beta * Phi(beta / |gamma|) + |gamma| * phi(beta / |gamma|).
    """
    gamma, beta = (np.asarray(v, np.float64) for v in bn_weights[:2])
    scale = np.maximum(np.abs(gamma), 1e-12)
    z = beta / scale
    cdf = 0.5 * (1.0 + np.vectorize(math.erf)(z / math.sqrt(2.0)))
    pdf = np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    return beta * cdf + scale * pdf


def _mapping(old: int, new: int, importance: np.ndarray,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Which old unit each new unit takes, and how many new units take each old one.

    Growing, the first `old` are themselves and the rest random copies; shrinking, the `new`
    most important are kept, in their order.
    """
    if new >= old:
        g = np.concatenate([np.arange(old), rng.integers(0, old, new - old)])
    else:
        g = np.sort(np.argsort(-importance, kind="stable")[:new])
    return g, np.bincount(g, minlength=old).astype(np.float32)


def resize_backbone(src: Any, dst: Any, src_arch: ArchitectureConfig,
                    dst_arch: ArchitectureConfig, *, seed: int, noise: float = 0.0) -> None:
    """Set `dst`'s weights from `src`'s, widened or pruned (both built by `build_backbone`)."""
    check_resizable(src_arch, dst_arch)
    rng = np.random.default_rng(seed)
    g_in, counts_in = np.zeros(1, np.int64), np.ones(1, np.float32)  # the grey input channel
    # The layers in order, each with the layer that reads its output.
    convs = [(f"s{s}_conv{i}", f"s{s}_bn{i}", width)
             for s, width in enumerate(dst_arch.widths) for i in range(dst_arch.convs_per_stage)]
    readers = [conv for conv, _, _ in convs[1:]] + ["fc"]

    def copy_out(kernel: np.ndarray, g_out: np.ndarray, n_old: int) -> np.ndarray:
        if noise > 0 and len(g_out) > n_old:
            extra = kernel[..., n_old:]
            kernel[..., n_old:] = extra + rng.normal(0, noise * kernel.std(), extra.shape)
        return kernel

    def importance(bn: str, reader: str) -> np.ndarray:
        (k_next, *_) = src.get_layer(reader).get_weights()
        reads = np.sqrt((k_next.astype(np.float64) ** 2).sum(
            axis=tuple(a for a in range(k_next.ndim) if a != k_next.ndim - 2)))
        return mean_relu_output(src.get_layer(bn).get_weights()) * reads

    def resize_bn(name: str, g: np.ndarray) -> None:
        dst.get_layer(name).set_weights([v[g] for v in src.get_layer(name).get_weights()])

    for (conv, bn, width), reader in zip(convs, readers, strict=True):
        (k,) = src.get_layer(conv).get_weights()
        g_out, counts_out = _mapping(k.shape[-1], width, importance(bn, reader), rng)
        k = k[:, :, g_in, :] / counts_in[g_in][None, None, :, None]
        dst.get_layer(conv).set_weights([copy_out(k[..., g_out], g_out, len(counts_out))])
        resize_bn(bn, g_out)
        g_in, counts_in = g_out, counts_out
    (k,) = src.get_layer("fc").get_weights()
    g_out, counts_out = _mapping(k.shape[-1], dst_arch.head_units,
                                 importance("fc_bn", "scores"), rng)
    k = k[g_in, :] / counts_in[g_in][:, None]
    dst.get_layer("fc").set_weights([copy_out(k[:, g_out], g_out, len(counts_out))])
    resize_bn("fc_bn", g_out)
    k, b = src.get_layer("scores").get_weights()
    dst.get_layer("scores").set_weights([k[g_out, :] / counts_out[g_out][:, None], b])
