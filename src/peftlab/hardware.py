"""What the machine can do fast, detected (never assumed): CPU model and the flags that decide
whether bf16 pays (AVX512-BF16 / AMX: bf16 matmul several times fp32; without them, e.g. an AVX2-only
Zen 3, bf16 matmul ran at ~1 GFLOP/s against ~120 for fp32)."""
from __future__ import annotations

import os
import platform
from functools import lru_cache

FLAGS_OF_INTEREST = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni", "fma")


@lru_cache(maxsize=1)
def cpu_info() -> dict:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model in ("", platform.machine(), platform.processor()):
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return {"cpu_model": model, "cpu_flags": [f for f in FLAGS_OF_INTEREST if f in flags],
            "cpu_count": os.cpu_count()}


def cpu_has_fast_bf16() -> bool:
    """bf16 matmul in hardware: AVX512-BF16 or AMX-BF16."""
    return bool({"avx512_bf16", "amx_bf16"} & set(cpu_info()["cpu_flags"]))
