"""The docs say what the code and the result files say: the generated pages are current, every ratio the
results page quotes from the benchmark is in its result file (or computed from it here), the README is a
front door (short, no paths outside the repository), and every relative link leads to a file."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_generated_pages_are_current():
    """docs/configuration.md, methods.md and benchmarks.md are written from the config fields' help, the
    methods registry and bench/results/*.md: a changed help text or a new benchmark run shows here."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "generate.py"), "--check"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def test_every_config_key_is_on_the_configuration_page():
    from peftlab.config.settings import field_index

    page = (ROOT / "docs" / "configuration.md").read_text()
    missing = [k for k in field_index() if f"| `{k}` |" not in page]
    assert not missing


def test_peftlab_methods_prints_every_method_with_its_settings(capsys):
    from peftlab.cli import main
    from peftlab.models.methods import METHODS

    assert main(["methods"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["method", "kind", "trains"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert list(rows) == list(METHODS)
    assert (
        "lora_rank" in rows["dora"] and "num_virtual_tokens" in rows["p-tuning"] and "freeze_layers" in rows["freeze"]
    )
    assert "(its virtual tokens are inputs)" in rows["prefix-tuning"]
    # the last column: the grid `search: {lr: auto}` gives the method's family
    assert rows["prefix-tuning"].rstrip().endswith("0.01, 0.003, 0.03") and rows["freeze"].rstrip().endswith("0.0001")
    assert rows["head"].rstrip().endswith("0.002, 0.0005, 0.01") and rows["vera"].rstrip().endswith(
        "0.0005, 0.0001, 0.002"
    )
    assert "n_frequency" in rows["fourierft"] and "q_proj,v_proj" in rows["vera"] and "2310.11454" in rows["vera"]


def bench() -> dict:
    return json.loads((ROOT / "bench" / "results" / "bench.json").read_text())


def derived_ratios() -> dict[str, str]:
    """Ratios the results page computes from bench.json rather than copies from bench.md: name -> text."""
    jobs, scaling = bench()["jobs"], bench()["scaling"]["rows"]
    step = {(r["method"], r["seq"]): r["step_s"] for r in scaling if r["method"] == "full" or r["rank"] == 8}
    lora_vs_full = [step[("lora", s)] / step[("full", s)] for (m, s) in step if m == "full"]
    gaps = {leg: v["gap_s"]["median"] for leg, v in jobs["e"]["legs"].items()}
    gap_ratio = gaps["peftlab sweep without start ahead"] / gaps["peftlab sweep"]
    scoring = {leg: v["seconds"]["median"] for leg, v in jobs["c"]["legs"].items()}
    bf16 = scoring["label scoring"] / scoring["label scoring precision=bf16"]
    return {
        "scaling, lora step time against full": f"{min(lora_vs_full):.2f}x-{max(lora_vs_full):.2f}x",
        "scaling at 512 tokens": f"{step[('lora', 512)] / step[('full', 512)]:.2f}x at 512 tokens",
        "sweep gaps without start ahead / with": f"**{gap_ratio:.1f}x**",
        "label scoring bf16": f"label scoring {bf16:.1f}x",
    }


def test_the_results_page_quotes_the_benchmark_as_its_result_file_has_it():
    """Each ratio in docs/results.md's speed section is one bench.md prints (the Benchmarks page is that
    file) or one computed above from bench.json; a target the text states ("the 10x of the target") is
    not a measurement. Stale figures (the bf16 lever's 1.36x of an older run, the scaling's 0.6-0.75x)
    fail here."""
    page = (ROOT / "docs" / "results.md").read_text()
    speed = page[page.index("## Speed") :]
    for name, text in derived_ratios().items():
        assert text in speed, f"{name}: the page should say {text!r}"
    printed = set(re.findall(r"(\d+(?:\.\d+)?)x", (ROOT / "bench" / "results" / "bench.md").read_text()))
    derived = " ".join(derived_ratios().values())
    for m in re.finditer(r"(\d+(?:\.\d+)?)x\b", speed):
        before = speed[max(0, m.start() - 40) : m.start()]
        if "target" in before + speed[m.end() : m.end() + 16]:
            continue
        assert m.group(1) in printed or m.group(0) in derived, f"{m.group(0)} in: ...{before}{m.group(0)}"


def test_after_training_figures_are_the_result_file_s():
    """docs/after-training.md's speed lines quote bench/results/after_training.json."""
    result = json.loads((ROOT / "bench" / "results" / "after_training.json").read_text())
    page = (ROOT / "docs" / "after-training.md").read_text()
    assert f"{result['rows']} CoLA dev rows" in page
    for name, ratio in result["speedups"].items():
        assert f"{ratio:.1f}x" in page, name


def test_the_guarantees_page_counts_the_bad_inputs_the_test_tries():
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", str(ROOT / "tests" / "test_bad_input.py")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    count = int(re.search(r"(\d+) tests? collected", done.stdout).group(1))
    assert (
        f"`tests/test_bad_input.py` ({count} inputs through the real CLI)"
        in (ROOT / "docs" / "guarantees.md").read_text()
    )


def test_the_readmes_demo_table_is_the_report_the_demo_wrote():
    """Every line of the README's demo block is a line of the report `make demo` wrote (kept in docs/results),
    and the times it states are the ones TIMING.md recorded."""
    readme = (ROOT / "README.md").read_text()
    folder = ROOT / "docs" / "results" / "demo-sst2-minilm"
    report = set((folder / "report.md").read_text().splitlines())
    block = readme[readme.index("## One result") :].split("```")[1]
    lines = [line for line in block.splitlines() if line.strip()]
    assert len(lines) >= 10 and not [line for line in lines if line not in report]
    summary = json.loads((folder / "report.json").read_text())
    assert {r["status"] for r in summary["runs"]} == {"completed"} and len(summary["runs"]) == 6
    timing = "".join((ROOT / "docs" / "results" / f / "TIMING.md").read_text() for f in RESULT_FOLDERS)
    for stated in re.findall(r"\d+ min \d+ s", readme):
        assert stated in timing, stated


RESULT_FOLDERS = ("demo-sst2-minilm", "decide-sst2-minilm")


def test_the_readmes_verdict_is_the_report_the_decision_sweep_wrote():
    """The README's "verdict you can act on" block: lines of the report kept in docs/results, whose runs are the
    shipped sweep's; its ratios are the ones its measurements recorded."""
    readme = (ROOT / "README.md").read_text()
    folder = ROOT / "docs" / "results" / "decide-sst2-minilm"
    section = readme[readme.index("## A verdict you can act on") :]
    lines = [line for line in section.split("```")[1].splitlines() if line.strip()]
    assert len(lines) >= 4 and not [line for line in lines if line not in (folder / "report.md").read_text()]
    summary = json.loads((folder / "report.json").read_text())
    assert summary["recommendation"] and len(summary["search"]) == 5
    assert len(json.loads((folder / "sweep.json").read_text())["runs"]) == 15
    measured = (folder / "search-vs-grid" / "compare.txt").read_text()
    for ratio in re.findall(r"(\d\.\d\d)x", section.split("```")[2]):
        assert f"{ratio}x" in measured, ratio


def test_the_readme_is_a_front_door():
    text = (ROOT / "README.md").read_text()
    assert len(text.encode()) <= 12_000
    for part in ("make demo", "make quick", "peftlab init", "docs/configuration.md"):
        assert part in text, part


def test_no_page_talks_to_its_developers():
    """Pages are for users (paths outside the repository: test_data_catalog's guard reads the docs too)."""
    for page in DOCS:
        text = page.read_text()
        for phrase in ("the users'", "CONTEXT.md", "the issue"):
            assert phrase not in text, f"{page.name}: {phrase!r}"


def test_every_relative_link_leads_to_a_file():
    for page in DOCS:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            path = (page.parent / target.split("#")[0]).resolve()
            assert path.exists(), f"{page.name}: {target}"
