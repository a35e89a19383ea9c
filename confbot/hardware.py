"""The CPU a speed figure was measured on.

The classifier's milliseconds per face differ tenfold between machines of this project: int8
LiteRT kernels are fast only with an 8-bit dot-product instruction (AVX512-VNNI or AVX-VNNI on
x86, the dot-product extension on Arm), and bfloat16 training needs AVX512-BF16 or AMX. So the
commands that report a speed (`confbot model evaluate`, `confbot bench face`) print the CPU's
model and which of those extensions it has, read from `/proc/cpuinfo`, beside the figure.
Two machines with the same model name and flags can still differ twice over: a hypervisor may
call both a first-generation EPYC (Zen 1, whose 256-bit vector instructions run as two 128-bit
halves) and a later one "AMD EPYC" with AVX2 and FMA. So the CPU's family and model numbers
(x86), or implementer and part (Arm), are printed too.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The extensions that decide the classifier's (and training's) speed, in /proc/cpuinfo's
# spelling: x86 `flags`, then Arm `Features` ("asimddp" is the 8-bit dot product).
SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16",
               "amx_int8", "amx_bf16", "asimd", "asimddp", "i8mm", "bf16")
INT8_DOT_PRODUCT = frozenset({"avx512_vnni", "avx_vnni", "amx_int8", "asimddp"})
# bfloat16 arithmetic in hardware; without it TensorFlow emulates bf16 on the CPU, which
# trained about ten times slower than float32 on an AVX2 machine (models/MODEL_CARD.md).
BF16_ARITHMETIC = frozenset({"avx512_bf16", "amx_bf16", "bf16"})
# /proc/cpuinfo's keys that identify the CPU's generation, and the word printed for each.
GENERATION_KEYS = {"cpu family": "family", "model": "model", "stepping": "stepping",
                   "cpu implementer": "implementer", "cpu part": "part"}


@dataclass(frozen=True)
class CpuInfo:
    model: str
    flags: tuple[str, ...] | None  # the SPEED_FLAGS present; None where they could not be read
    # "family 23 model 1 stepping 2" (x86) or "implementer 0x41 part 0xd0c" (Arm); None unread
    generation: str | None = None

    @property
    def int8_dot_product(self) -> bool | None:
        if self.flags is None:
            return None
        return bool(INT8_DOT_PRODUCT.intersection(self.flags))

    @property
    def bf16_arithmetic(self) -> bool | None:
        if self.flags is None:
            return None
        return bool(BF16_ARITHMETIC.intersection(self.flags))

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "generation": self.generation,
                "flags": None if self.flags is None else list(self.flags),
                "int8_dot_product": self.int8_dot_product, "bf16_arithmetic": self.bf16_arithmetic}

    def describe(self) -> str:
        flags = "flags unknown" if self.flags is None else " ".join(self.flags) or "none of note"
        if self.generation:
            return f"{self.model} ({self.generation}; {flags})"
        return f"{self.model} ({flags})"


def parse_cpuinfo(text: str) -> CpuInfo:
    """The first processor's model, generation and speed flags from the text of /proc/cpuinfo."""
    model = ""
    present: set[str] | None = None
    ids: dict[str, str] = {}
    processors = 0
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip().lower()
        processors += key == "processor"
        if key in ("model name", "hardware") and not model:
            model = value.strip()
        elif key in ("flags", "features") and present is None:
            present = set(value.split())
        elif key in GENERATION_KEYS and value.strip() and processors <= 1:
            ids.setdefault(key, value.strip())
    flags = None if present is None else tuple(f for f in SPEED_FLAGS if f in present)
    named = [f"{GENERATION_KEYS[k]} {ids[k]}" for k in GENERATION_KEYS if k in ids]
    return CpuInfo(model=model or platform.processor() or platform.machine() or "unknown",
                   flags=flags, generation=" ".join(named) or None)


def cpu_info(path: Path = Path("/proc/cpuinfo")) -> CpuInfo:
    """This machine's CPU; model from `platform` and flags unknown where /proc is absent."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        text = ""
    return parse_cpuinfo(text)
