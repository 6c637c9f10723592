"""The precision bench's summary and table, on made-up runs (timings never sit in test asserts: these
numbers are inputs, and the test checks the arithmetic and layout the bench reports them with)."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from precision import summarize, table  # noqa: E402


def fake_run(t, tokens, mem, loss):
    return {"time_per_epoch_s": t, "train_tokens_per_s": tokens, "peak_memory_mb": mem, "train_loss": loss,
            "eval_loss": loss + 0.1, "accuracy": None, "total_params": 1_000_000, "precision": "x"}


def test_summary_takes_medians_and_the_table_shows_ratios_and_mfu():
    fp32 = summarize([fake_run(30, 100, 1024, 1.0), fake_run(10, 300, 2048, 1.2), fake_run(20, 200, 1024, 1.1)])
    bf16 = summarize([fake_run(10, 400, 2048, 1.0), fake_run(12, 380, 2048, 1.0), fake_run(11, 390, 2048, 1.0)])
    assert fp32["time_per_epoch_s"]["median"] == 20 and (fp32["time_per_epoch_s"]["min"], fp32["time_per_epoch_s"]["max"]) == (10, 30)
    assert "accuracy" not in fp32  # never measured: no column of zeros
    result = {"date": "2026-12-02", "cpu": {"cpu_model": "Test CPU", "cpu_count": 2, "cpu_flags": ["avx512_bf16"]},
              "repeats": 3, "rows": {"cls": 10}, "peak_gflops": {"fp32": 100.0, "bf16": 300.0},
              "jobs": {"cls": {"fp32": fp32, "bf16": bf16}},
              "ratios": {"cls": {"tokens_per_s": 390 / 200, "peak_memory": 2.0}}}
    md = table(result)
    lines = md.splitlines()
    assert "Test CPU (2 cores; avx512_bf16)" in lines[0] and "bf16 300 GFLOP/s" in lines[0]
    fp32_row = next(l for l in lines if l.startswith("| cls (10 rows) | fp32"))
    assert "20.0 (10.0-30.0) s" in fp32_row and "1.00 GiB" in fp32_row
    assert fp32_row.endswith(f"| {100 * 6 * 1_000_000 * 200 / 100e9:.1f}% |")  # 6 N tokens/s against the peak
    assert "bf16 trains **1.95x** the tokens/s of fp32, peak RSS 2.00x" in md
    assert fp32["train_loss"]["median"] == pytest.approx(1.1)
