"""The machine is named from /proc/cpuinfo, not guessed: AMD EPYC and Xeon samples."""

from __future__ import annotations

from pathlib import Path

from resomap.device import describe, machine, parse_cpuinfo

# Trimmed from real /proc/cpuinfo files: two logical cores each (the flags line is shortened to
# the flags that matter and some neighbours, in their real order).
AMD_EPYC = """\
processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9R14 96-Core Processor
flags\t\t: fpu sse sse2 ssse3 fma sse4_2 avx f16c avx2 bmi2 avx512f avx512dq avx512bw avx512_bf16 avx512_vnni

processor\t: 1
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9R14 96-Core Processor
flags\t\t: fpu sse sse2 ssse3 fma sse4_2 avx f16c avx2 bmi2 avx512f avx512dq avx512bw avx512_bf16 avx512_vnni
"""

XEON_AMX = """\
processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8488C
flags\t\t: fpu sse sse2 avx avx2 avx512f avx512bw avx512_bf16 avx512_vnni amx_bf16 avx512_fp16 amx_tile

processor\t: 1
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8488C
flags\t\t: fpu sse sse2 avx avx2 avx512f avx512bw avx512_bf16 avx512_vnni amx_bf16 avx512_fp16 amx_tile
"""

OLD_LAPTOP = """\
processor\t: 0
model name\t: Intel(R) Core(TM) i5-3317U CPU @ 1.70GHz
flags\t\t: fpu sse sse2 avx
"""


def test_amd_epyc_has_avx512_bf16_and_no_amx(tmp_path: Path):
    (tmp_path / "cpuinfo").write_text(AMD_EPYC)
    info = machine(tmp_path / "cpuinfo")
    assert info["cpu"] == "AMD EPYC 9R14 96-Core Processor" and info["cores"] == 2
    assert info["avx512_bf16"] is True and info["avx2"] is True
    assert info["amx_bf16"] is False and info["amx_tile"] is False
    assert info["cpu_kind"] == "AVX512-BF16"
    assert describe(info).startswith("AMD EPYC 9R14 96-Core Processor (AVX512-BF16, no AMX), 2 cores")


def test_xeon_with_amx_is_named_so(tmp_path: Path):
    (tmp_path / "cpuinfo").write_text(XEON_AMX)
    info = machine(tmp_path / "cpuinfo")
    assert info["cpu"] == "Intel(R) Xeon(R) Platinum 8488C"
    assert info["amx_bf16"] is True and info["avx512_bf16"] is True
    assert info["cpu_kind"] == "AMX-BF16" and "no AMX" not in describe(info)


def test_flags_are_matched_as_words_not_substrings():
    # "avx512_bf16" must not be read from "avx512_bf16x" or "avx2" from "avx256".
    info = parse_cpuinfo("model name : X\nflags : avx512_bf16x avx256 amx_bf16_foo\n")
    assert not info["avx512_bf16"] and not info["avx2"] and not info["amx_bf16"]
    assert parse_cpuinfo(OLD_LAPTOP)["avx2"] is False


def test_unreadable_cpuinfo_gives_unknown_flags_not_false(tmp_path: Path):
    info = machine(tmp_path / "missing")
    assert info["cpu"] and info["cores"] >= 1
    assert info["avx512_bf16"] is None and info["cpu_kind"] == "unknown"
