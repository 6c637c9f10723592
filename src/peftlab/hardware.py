"""What the machine can do fast, detected (never assumed): CPU model and the flags that decide
whether bf16 pays (AVX512-BF16 / AMX: bf16 matmul several times fp32; without them, e.g. an AVX2-only
Zen 3, bf16 matmul ran at ~1 GFLOP/s against ~120 for fp32)."""

from __future__ import annotations

import os
import platform
from functools import lru_cache

FLAGS_OF_INTEREST = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile", "avx512_vnni", "fma")


@lru_cache(maxsize=1)
def cpu_info() -> dict:
    """The first CPU's model name and the flags of interest it has (Linux /proc/cpuinfo)."""
    fields = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    flags = set(fields.get("flags", "").split())
    return {
        "cpu_model": fields.get("model name") or platform.processor() or platform.machine(),
        "cpu_flags": [f for f in FLAGS_OF_INTEREST if f in flags],
        "cpu_count": os.cpu_count(),
    }


def cpu_has_fast_bf16() -> bool:
    """bf16 matmul in hardware: AVX512-BF16 or AMX-BF16."""
    return bool({"avx512_bf16", "amx_bf16"} & set(cpu_info()["cpu_flags"]))


def cpu_has_amx() -> bool:
    """Intel AMX tiles (Sapphire Rapids and later)."""
    return "amx_tile" in cpu_info()["cpu_flags"]


def physical_cores() -> int:
    """llama.cpp runs best on one thread per physical core (hyper-threads share the FMA units);
    $PEFTLAB_LLAMACPP_THREADS overrides it (fewer on a machine whose cores other jobs hold)."""
    if os.environ.get("PEFTLAB_LLAMACPP_THREADS", "").isdigit():
        return max(1, int(os.environ["PEFTLAB_LLAMACPP_THREADS"]))
    try:
        import psutil

        return max(1, psutil.cpu_count(logical=False) or os.cpu_count() or 1)
    except ImportError:
        return max(1, os.cpu_count() or 1)
