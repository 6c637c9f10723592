"""bench/run.py (`make bench`): its parsing of each leg and its table, on a tiny job run for real (tiny
models, a few rows) and on made-up figures for the arithmetic. Timings never sit in test asserts: the
numbers here are inputs, and the tests check what the bench reports them with."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import run as bench  # noqa: E402

CHAT = "{% for m in messages %}<s> {{ m['content'] }} </s> {% endfor %}{% if add_generation_prompt %}<s> {% endif %}"


@pytest.fixture(scope="module")
def chat_llama(tiny_llama, tmp_path_factory) -> str:
    """The tiny llama with a chat template (the plain leg renders alpaca rows with it, as users do)."""
    import shutil

    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("chat-llama")
    shutil.copytree(tiny_llama, folder, dirs_exist_ok=True)
    tok = AutoTokenizer.from_pretrained(folder)
    tok.chat_template = CHAT
    tok.save_pretrained(folder)
    return str(folder)


def test_a_tiny_sft_job_through_the_plain_and_peftlab_legs(chat_llama, tmp_path):
    rows = [
        {"instruction": "the movie was", "input": "good" if i % 2 else "", "output": "great film . happy"}
        for i in range(12)
    ]
    data = tmp_path / "alpaca.json"
    data.write_text(json.dumps(rows))
    job = {
        **bench.JOB_A,
        "rows": 12,
        "n_rows": 12,
        "batch_size": 4,
        "model": chat_llama,
        "data": str(data),
        "peftlab_model": chat_llama,
    }
    (tmp_path / "plain").mkdir()
    (tmp_path / "peftlab").mkdir()
    plain = bench.leg_plain(job, "sft", tmp_path / "plain")
    ours = bench.leg_peftlab(bench.peftlab_sft_args(job), tmp_path / "peftlab")
    for leg in (plain, ours):
        assert leg["peak_rss_mb"] > 50 and leg["wall_s"] > 0  # the kernel's figure for that child
        assert 0 < leg["time_to_first_step_s"] < leg["wall_s"]
        assert leg["train_tokens"] > 12 and leg["train_loss"] > 0
        assert leg["train_tokens_per_s"] == pytest.approx(leg["train_tokens"] / leg["train_time_s"])
        assert leg["samples_per_s"] == pytest.approx(12 / leg["train_time_s"])
    # the same work: both sides train on the same non-padding tokens
    assert plain["train_tokens"] == ours["train_tokens"]
    assert ours["lm_loss"].startswith("answer tokens only")
    summary = bench.summarize([ours, ours])
    assert summary["train_tokens"]["median"] == ours["train_tokens"] and summary["lm_loss"] == ours["lm_loss"]


def test_a_failed_leg_says_which_and_shows_its_log(tmp_path):
    with pytest.raises(RuntimeError, match=r"(?s)failed \(exit 3\).*boom"):
        bench.run_process([sys.executable, "-c", "print('boom'); raise SystemExit(3)"], tmp_path / "log.txt")


def made_up(**medians):
    return {k: {"median": v, "min": v * 0.9, "max": v * 1.1, "values": [v]} for k, v in medians.items()}


def test_table_and_ratios_for_each_kind_of_job():
    legs_a = {
        "plain": made_up(train_tokens_per_s=100, peak_rss_mb=4096, train_loss=1.5, wall_s=60),
        "llamafactory": made_up(train_tokens_per_s=80, peak_rss_mb=3072, train_loss=1.5, wall_s=70),
        "peftlab": {
            **made_up(train_tokens_per_s=200, peak_rss_mb=2048, train_loss=1.501, wall_s=40),
            "precision": "bf16",
            "trainable_params": 10_000,  # a LoRA adapter: 6 N for its own matrices, 4 N for the frozen base
        },
    }
    legs_c = {
        "generate + parse": made_up(seconds=100, accuracy=0.0, mcc=0.0, unparsed=500, peak_rss_mb=1000),
        "label scoring": made_up(seconds=10, accuracy=0.6, mcc=0.1, peak_rss_mb=900),
    }
    legs_d = {
        "one at a time (users' predict.py)": made_up(seconds=60, accuracy=0.5, peak_rss_mb=900),
        "peftlab predict: label scoring": made_up(seconds=3, accuracy=0.6, peak_rss_mb=900),
    }
    legs_e = {"peftlab sweep, 6 runs": made_up(gap_s=2.5, gap_max_s=3.1, spawn_s=0.2, wall_s=90, peak_rss_mb=500)}
    result = {
        "date": "2026-12-02",
        "cpu": {"cpu_model": "Test CPU", "cpu_count": 2, "cpu_flags": ["avx512_bf16"]},
        "torch_threads": 2,
        "repeats": 3,
        "peak_gflops": {"fp32": 100.0, "bf16": 300.0},
        "jobs": {},
    }
    for job, legs in {"a": legs_a, "c": legs_c, "d": legs_d, "e": legs_e}.items():
        result["jobs"][job] = {
            "title": f"job {job}",
            "params": 100_000_000,
            "legs": legs,
            "ratios": bench.ratios(job, legs),
            "notes": ["a note"],
        }
    md = bench.table(result)
    assert "Test CPU (2 cores; avx512_bf16)" in md and "bf16 300 GFLOP/s" in md and "Median of 3" in md
    assert "peftlab vs plain: **2.00x** train tokens/s, 0.50x peak RSS, train loss +0.0010" in md
    assert "peftlab vs llamafactory: **2.50x** train tokens/s, 0.67x peak RSS" in md
    row = next(l for l in md.splitlines() if l.startswith("| peftlab |"))
    assert "2.00 (1.80-2.20) GiB" in row
    # MFU counted honestly, against the bf16 peak for a bf16 leg: 4 N per token over the frozen base and the
    # adapter, 2 N more for the adapter's weights (the only ones trained)
    flops = 4 * (100_000_000 + 10_000) + 2 * 10_000
    assert row.endswith(f"| {100 * flops * 200 / 300e9:.1f}% |") and row.endswith("| 26.7% |")  # 6 N: 40.0%
    assert "label scoring vs generate + parse: **10.0x** faster, accuracy 0.600 vs 0.000" in md
    assert "peftlab predict: label scoring vs one at a time: **20.0x** faster" in md
    assert "median **2.50 s** from one run's end" in md
    header = next(l for l in md.splitlines() if l.startswith("| leg | wall | median gap"))
    assert header.count("|") == 7  # the gaps job has its own columns, no MFU
    assert md.count("- a note") == 4


def test_time_to_a_learned_model_climbs_the_row_ladder_until_the_target_and_reports_both_waits(tmp_path):
    """Job (f): each leg trains on more rows until a model reaches the target; the wall of the run that got
    there and of the whole ladder are both reported, and a leg that never gets there says so."""
    accuracies = {250: 0.70, 500: 0.79, 1000: 0.83, 2000: 0.9}

    def once(rows, folder):
        assert folder.is_dir()
        return {"started": 0.0, "wall_s": rows / 10, "peak_rss_mb": 1000.0}, accuracies[rows]

    leg = bench.leg_time_to_model(once, tmp_path)
    assert leg["rows_needed"] == 1000 and leg["accuracy"] == 0.83 and leg["wall_s"] == 100
    assert leg["ladder_wall_s"] == 25 + 50 + 100 and [x["rows"] for x in leg["ladder"]] == [250, 500, 1000]
    never = bench.leg_time_to_model(lambda rows, folder: ({"wall_s": 1.0, "peak_rss_mb": 1.0}, 0.6), tmp_path)
    assert never["rows_needed"] is None and len(never["ladder"]) == len(bench.TTM_LADDER)
    legs = {
        "plain (sequence-classification head)": bench.summarize([leg]),
        "peftlab (label likelihood)": bench.summarize([{**leg, "rows_needed": 250, "wall_s": 20, "ladder_wall_s": 20}]),
    }
    legs["llamafactory (SFT on the label word, its predict)"] = bench.summarize([{**leg, "wall_s": 50}])
    lines = bench.ratios("f", legs)
    assert "plain (sequence-classification head): 250 rows 0.700 in 25 s, 500 rows 0.790 in 50 s" in lines[0]
    assert any(
        x.startswith("peftlab vs plain: **5.0x** less wall time to a model at 0.8 accuracy (8.8x") for x in lines
    )
    assert lines[-1].startswith("peftlab vs llamafactory: **2.5x** less wall time")
    assert "(never reached 0.8)" in bench.ratios("f", {"x": bench.summarize([never])})[0]


def test_job_f_reads_the_shipped_sst2_sample():
    """Job (f) runs on a fresh clone: its data are the package's SST-2 sample (pkg:), 2,000 training rows
    (the ladder's top) and a dev file with at least the rows it scores."""
    import csv

    for path, least in ((bench.SST2_SAMPLE, bench.TTM_LADDER[-1]), (bench.SST2_SAMPLE_DEV, bench.TTM_EVAL)):
        with open(bench.package_path(path, "bench"), newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
        assert len(rows) >= least and {r["label"] for r in rows} == {"0", "1"}, path


def test_the_llamafactory_leg_of_job_f_asks_and_grades_the_label_word(tmp_path):
    """LLaMA-Factory has no classification head: its leg trains the label word as the answer (alpaca rows)
    and counts an answer right when its first word is that word."""
    sys.path.insert(0, str(Path(bench.__file__).parent / "legs"))
    import llamafactory_cls as lf

    tsv = tmp_path / "d.tsv"
    tsv.write_text("sentence\tlabel\na fine film\t1\ndull\t0\nthird\t1\n")
    rows = lf.alpaca(str(tsv), 2, "Review: {text}\nQuestion: positive or negative?", ["negative", "positive"])
    assert rows == [
        {"instruction": "Review: a fine film\nQuestion: positive or negative?", "input": "", "output": "positive"},
        {"instruction": "Review: dull\nQuestion: positive or negative?", "input": "", "output": "negative"},
    ]
    assert [lf.first_word(a) for a in ("Positive.", " negative, I think", "", "The review is positive")] == [
        "positive",
        "negative",
        "",
        "the",
    ]


def test_the_table_is_rebuilt_from_a_saved_result(tmp_path):
    legs = {
        "plain": made_up(train_tokens_per_s=100, peak_rss_mb=4096, train_loss=1.5),
        "peftlab": made_up(train_tokens_per_s=150, peak_rss_mb=4096, train_loss=1.5),
    }
    saved = {
        "date": "d",
        "cpu": {"cpu_model": "C", "cpu_count": 2, "cpu_flags": []},
        "torch_threads": 2,
        "repeats": 3,
        "peak_gflops": {"fp32": 100.0},
        "jobs": {"b": {"title": "t", "params": 10, "legs": legs}},
    }
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(saved))
    assert bench.main(["--table", str(path)]) == 0
    assert "peftlab vs plain: **1.50x**" in (tmp_path / "bench.md").read_text()
