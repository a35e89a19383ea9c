"""The CPU description printed beside every speed figure."""

from __future__ import annotations

from pathlib import Path

from confbot.hardware import cpu_info, parse_cpuinfo

X86 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC 9R14
stepping\t: 1
flags\t\t: fpu sse sse2 avx fma avx2 bmi2

processor\t: 1
cpu family\t: 26
model\t\t: 2
model name\t: AMD EPYC 9R14
stepping\t: 0
flags\t\t: fpu sse sse2 avx fma avx2 bmi2 avx512f avx512_vnni
"""

X86_AMX = """model name\t: Intel(R) Xeon(R) Processor
flags\t\t: avx2 fma avx512f avx512_bf16 avx512_vnni amx_bf16 amx_tile amx_int8 avx_vnni
"""

ARM = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp asimddp i8mm
CPU implementer\t: 0x41
"""


def test_an_avx2_machine_has_no_int8_dot_product() -> None:
    cpu = parse_cpuinfo(X86)
    assert cpu.model == "AMD EPYC 9R14"
    assert cpu.flags == ("avx2", "fma")  # the first processor's, in SPEED_FLAGS order
    assert cpu.int8_dot_product is False
    # the first processor's too, none of it from the next (whose stepping the first lacked)
    assert parse_cpuinfo(X86.replace("stepping\t: 1\n", "")).generation == "family 25 model 17"
    assert cpu.generation == "family 25 model 17 stepping 1"
    assert cpu.describe() == "AMD EPYC 9R14 (family 25 model 17 stepping 1; avx2 fma)"


def test_vnni_and_amx_are_named() -> None:
    cpu = parse_cpuinfo(X86_AMX)
    assert cpu.flags == ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16",
                         "amx_int8", "amx_bf16")
    assert cpu.int8_dot_product is True
    assert cpu.as_dict()["int8_dot_product"] is True


def test_arm_features_and_a_missing_model_name() -> None:
    cpu = parse_cpuinfo(ARM)
    assert cpu.flags == ("asimd", "asimddp", "i8mm")
    assert cpu.int8_dot_product is True
    assert cpu.model  # from the platform module, since Arm's cpuinfo names none
    assert cpu.generation == "implementer 0x41"


def test_unreadable_cpuinfo_gives_unknown_flags(tmp_path: Path) -> None:
    cpu = cpu_info(tmp_path / "no-such-file")
    assert cpu.flags is None and cpu.int8_dot_product is None
    assert "flags unknown" in cpu.describe()
    assert cpu.as_dict() == {"model": cpu.model, "generation": None, "flags": None,
                             "int8_dot_product": None, "bf16_arithmetic": None}
    assert cpu.bf16_arithmetic is None


def test_bf16_arithmetic_is_avx512_bf16_amx_or_arms_bf16() -> None:
    # Without it TensorFlow emulates bfloat16, and `mixed_bfloat16 = "auto"` trains in float32.
    assert parse_cpuinfo(X86).bf16_arithmetic is False
    assert parse_cpuinfo(ARM).bf16_arithmetic is False
    assert parse_cpuinfo(X86_AMX).bf16_arithmetic is True
    assert parse_cpuinfo("flags : avx2 fma avx512f avx512_bf16\n").bf16_arithmetic is True
    assert parse_cpuinfo(ARM.replace("i8mm", "i8mm bf16")).bf16_arithmetic is True
    assert parse_cpuinfo(X86_AMX).as_dict()["bf16_arithmetic"] is True


def test_two_cpus_a_hypervisor_names_alike_are_told_apart_by_their_generation() -> None:
    # A first-generation EPYC (Zen 1: 256-bit vector instructions in two 128-bit halves) ran the
    # lite model at 3.2 ms a face where a later "AMD EPYC" with the same flags took 1.4.
    zen1 = parse_cpuinfo("cpu family\t: 23\nmodel\t\t: 1\nmodel name\t: AMD EPYC\n"
                         "stepping\t: 2\nflags\t\t: avx avx2 fma\n")
    zen2 = parse_cpuinfo("cpu family\t: 23\nmodel\t\t: 49\nmodel name\t: AMD EPYC\n"
                         "stepping\t: 0\nflags\t\t: avx avx2 fma\n")
    assert zen1.flags == zen2.flags and zen1.model == zen2.model
    assert zen1.describe() == "AMD EPYC (family 23 model 1 stepping 2; avx2 fma)"
    assert zen1.as_dict() != zen2.as_dict()
    assert parse_cpuinfo("model name : EPYC\nflags : avx2\n").generation is None
