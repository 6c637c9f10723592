"""`peftlab ui` driven in headless Chromium (Debian's chromium + chromium-driver, installed by `make
test`) against a real runs folder made by a tiny sweep: the list shows the runs, the compare page's
tables are the report's, predictions show their errors, a sweep launched from the form shows live
progress (pushed, the page is not reloaded), stops with its run's state saved and resumes to the end;
paths outside the runs folder are refused; hostile text in a run folder is shown as text and runs
nothing; a pasted file is checked as its run will read it.

The module's finished sweep (`runs`) and its dashboard (`server`) are only read: a test that launches,
writes or links files has a runs folder and a dashboard of its own, so the tests pass in any order.
Every wait has a deadline (`wait_for`, `first_line`, each subprocess's timeout)."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from peftlab.cli import main
from peftlab.runs import layout
from peftlab.runs.rundir import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM, DRIVER = (
    shutil.which("chromium") or "/usr/bin/chromium",
    shutil.which("chromedriver") or "/usr/bin/chromedriver",
)


def tiny_config(tiny_bert: str, sentiment: dict, **extra) -> dict:
    return {
        "model": tiny_bert,
        "train_file": sentiment["train"],
        "validation_file": sentiment["dev"],
        "epochs": 2,
        "batch_size": 16,
        "lr": 5e-3,
        "max_length": 16,
        "logging_steps": 2,
        "save_steps": 3,
        **extra,
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_bert, sentiment) -> Path:
    """RUNS_DIR with one finished sweep: head and LoRA r=4, two seeds each (so the tables have ± and p)."""
    root = tmp_path_factory.mktemp("ui") / "runs"
    sweep = root.parent / "methods.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {
                "name": "methods",
                "config": tiny_config(tiny_bert, sentiment),
                "variants": [
                    {"name": "head", "method": "head", "lr": 5e-2},
                    {"name": "lora-r4", "method": "lora", "lora_rank": 4, "lr": 3e-2},
                ],
                "grid": {"seed": [1, 2]},
            }
        )
    )
    assert main(["sweep", str(sweep), "--output-dir", str(root)]) == 0
    return root


def first_line(log: Path, proc: subprocess.Popen, timeout: float = 60) -> str:
    """The dashboard's first line (its address); its output goes to a file, so a full pipe never blocks it."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        text = log.read_text() if log.exists() else ""
        if "\n" in text:
            return text.splitlines()[0]
        if proc.poll() is not None:
            raise AssertionError(f"peftlab ui exited with {proc.returncode}: {text}")
        time.sleep(0.1)
    raise AssertionError(f"peftlab ui printed no address in {timeout} s: {log.read_text() if log.exists() else ''}")


@contextlib.contextmanager
def dashboard(root: Path, *args: str, cwd: Path | None = None, env: dict | None = None):
    """`peftlab ui ROOT --port 0 ARGS` as a user starts it; yields (url, port, line) and stops it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "PYTHONUNBUFFERED": "1", **(env or {})}
    log = Path(root).parent / f"ui-{time.monotonic_ns()}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "peftlab", "ui", str(root), "--port", "0", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
        )
    try:
        line = first_line(log, proc)
        match = re.search(r"(http://\S+):(\d+)/", line)
        assert match, line
        yield f"{match.group(1)}:{match.group(2)}", int(match.group(2)), line
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def allowed(tiny_bert: str, sentiment: dict) -> list[str]:
    return ["--allow-root", tiny_bert, "--allow-root", str(Path(sentiment["train"]).parent)]


@pytest.fixture(scope="module")
def server(runs, tiny_bert, sentiment):
    """`peftlab ui RUNS --port 0`, allowed to read the tiny model and data folders; only read by the tests."""
    with dashboard(runs, *allowed(tiny_bert, sentiment)) as (url, port, _):
        yield url, port


@pytest.fixture
def own_runs(tmp_path) -> Path:
    root = tmp_path / "runs"
    root.mkdir()
    return root


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert Path(CHROMIUM).exists() and Path(DRIVER).exists(), "Chromium is missing: `make test` installs it (apt)"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def wait_for(check, timeout: float = 120, what: str = ""):
    """check() until it is true; a page still loading (element not there yet, or replaced) is retried."""
    from selenium.common.exceptions import WebDriverException

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            value = check()
        except WebDriverException:
            value = None
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def text(browser, css: str) -> str:
    from selenium.webdriver.common.by import By

    return browser.find_element(By.CSS_SELECTOR, css).text


def table_cells(browser, css: str) -> list[list[str]]:
    from selenium.webdriver.common.by import By

    table = browser.find_element(By.CSS_SELECTOR, css)
    return [
        [c.text for c in tr.find_elements(By.CSS_SELECTOR, "th, td")] for tr in table.find_elements(By.TAG_NAME, "tr")
    ]


def markdown_tables(md: str) -> dict[str, list[list[str]]]:
    """{section title: rows (header first)} of a report.md."""
    out, title = {}, None
    for line in md.splitlines():
        if line.startswith("## "):
            title = line[3:]
        elif line.startswith("|") and not line.startswith("|---") and title:
            out.setdefault(title, []).append([c.strip() for c in line.strip("|").split("|")])
    return out


def test_list_shows_every_run_and_filters(server, browser, runs):
    from selenium.webdriver.common.by import By

    url, _ = server
    browser.get(url + "/")
    rows = browser.find_elements(By.CSS_SELECTOR, "#runs tbody tr")
    names = {r.get_attribute("data-id") for r in rows}
    assert names == {f"methods/{n}" for n in ("head-s1", "head-s2", "lora-r4-s1", "lora-r4-s2")}
    result = json.loads((runs / "methods" / "lora-r4-s1" / "result.json").read_text())
    row = browser.find_element(By.CSS_SELECTOR, 'tr[data-id="methods/lora-r4-s1"]')
    cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
    assert cells[3] == "completed" and cells[6] == "lora" and cells[7] == "accuracy"
    assert cells[8] == f"{result['metrics_best']['accuracy']:.4f}"
    assert result["peak_memory_kind"] == "process_peak_rss" and cells[11] == f"{result['peak_memory_mb']:.0f} RSS"
    browser.find_element(By.ID, "filter").send_keys("lora")
    assert text(browser, "#shown-count") == "2 of 4 shown"
    # sorting by the best metric puts the rows in its order
    browser.find_element(By.ID, "filter").clear()
    browser.find_element(By.ID, "filter").send_keys(" ")
    browser.find_element(By.XPATH, "//table[@id='runs']//th[text()='best']").click()
    shown = [
        float(r.find_elements(By.TAG_NAME, "td")[8].text)
        for r in browser.find_elements(By.CSS_SELECTOR, "#runs tbody tr")
    ]
    assert shown == sorted(shown)


def test_compare_page_tables_are_the_reports(server, browser, runs):
    from selenium.webdriver.common.by import By

    url, _ = server
    browser.get(url + "/")
    for box in browser.find_elements(By.CSS_SELECTOR, "#runs tbody input[type=checkbox]"):
        box.click()
    browser.find_element(By.ID, "compare-button").click()
    wait_for(lambda: "/compare" in browser.current_url, 30, "the compare page")
    report = markdown_tables((runs / "methods" / "report" / "report.md").read_text())
    assert table_cells(browser, "#table-0") == report["Result at epoch 0 (before any update)"]
    assert table_cells(browser, "#table-1") == report["Result at best epoch"]
    assert any("±" in c for row in table_cells(browser, "#table-1") for c in row)  # two seeds: mean ± std
    # the Pareto plot of another metric against another cost, and the CSV export, answer
    img = browser.find_element(By.ID, "pareto")
    assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) > 100
    csv_href = browser.find_element(By.ID, "csv").get_attribute("href")
    browser.get(csv_href.replace("compare.csv", "compare.md"))
    assert "Result at best epoch" in browser.page_source


def test_predictions_show_errors_and_confusion(server, browser, runs):
    from selenium.webdriver.common.by import By

    url, _ = server
    lines = read_jsonl(runs / "methods" / "head-s1" / "predictions_validation.jsonl")
    wrong = [r for r in lines if r["label"] != r["prediction"]]
    browser.get(url + "/predictions/methods/head-s1?file=predictions_validation.jsonl&errors=1")
    assert int(text(browser, "#n-wrong")) == len(wrong) and int(text(browser, "#n-total")) == len(lines)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#predictions tbody tr")) == len(wrong)
    matrix = table_cells(browser, "#confusion")
    counts = [[int(c) for c in row[1:]] for row in matrix[1:]]
    assert sum(map(sum, counts)) == len(lines)
    off_diagonal = sum(c for i, row in enumerate(counts) for j, c in enumerate(row) if i != j)
    assert off_diagonal == len(wrong)


def test_launch_watch_stop_and_resume(browser, own_runs, tiny_bert, sentiment):
    from selenium.webdriver.common.by import By

    runs = own_runs
    sweep = {
        "name": "launched",
        "config": tiny_config(tiny_bert, sentiment, method="lora", lora_rank=4, lr=3e-2),
        "variants": [{"name": "quick", "epochs": 1}, {"name": "long", "epochs": 120}],
    }
    with dashboard(runs, *allowed(tiny_bert, sentiment)) as (url, _, _):
        browser.get(url + "/launch")
        browser.execute_script("document.getElementById('yaml').value = arguments[0]", yaml.safe_dump(sweep))
        browser.find_element(By.ID, "source-yaml").click()
        browser.find_element(By.ID, "launch").click()
        wait_for(
            lambda: browser.current_url.endswith("/sweep/launched") and text(browser, "#state"), 60, "the sweep page"
        )
        loaded = browser.find_element(By.TAG_NAME, "body").get_attribute("data-loaded")

        # live: the first run finishes and the second one runs, with its loss so far drawn, without a reload
        wait_for(
            lambda: text(browser, "#current") == "long" and text(browser, "#state") == "running", 180, "run 'long'"
        )
        wait_for(
            lambda: (
                int(browser.find_element(By.CSS_SELECTOR, "#loss polyline").get_attribute("data-n") or 0) >= 2
                if browser.find_elements(By.CSS_SELECTOR, "#loss polyline")
                else False
            ),
            120,
            "the loss curve",
        )
        assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-loaded") == loaded
        assert int(browser.find_element(By.TAG_NAME, "body").get_attribute("data-updates")) > 2
        assert wait_for(lambda: "/ 120" in text(browser, "#epoch") and text(browser, "#log"), 30, "epoch and log")
        quick = json.loads((runs / "launched" / "quick" / layout.RESULT).read_text())
        assert quick["status"] == "completed"

        browser.find_element(By.ID, "stop").click()
        wait_for(lambda: text(browser, "#state") == "not running", 120, "the sweep to stop")
        long = json.loads((runs / "launched" / "long" / layout.RESULT).read_text())
        assert long["status"] == "interrupted"
        assert json.loads((runs / "launched" / layout.SWEEP_STATE).read_text())["runs"][1]["status"] == "interrupted"

        browser.find_element(By.ID, "resume").click()
        wait_for(lambda: text(browser, "#state") == "finished", 300, "the resumed sweep to finish")
        long = json.loads((runs / "launched" / "long" / layout.RESULT).read_text())
        assert long["status"] == "completed" and long["resumed"] is True and long["epochs_run"] == 120
        assert quick == json.loads((runs / "launched" / "quick" / layout.RESULT).read_text())  # kept, not redone


def paste(browser, url: str, text: str) -> str:
    """Paste a sweep file into the launch form and submit it; the error shown, or '' when it launched."""
    from selenium.webdriver.common.by import By

    browser.get(url + "/launch")
    browser.execute_script("document.getElementById('yaml').value = arguments[0]", text)
    browser.find_element(By.ID, "source-yaml").click()
    browser.find_element(By.ID, "launch").click()
    wait_for(lambda: "/sweep/" in browser.current_url or browser.find_elements(By.ID, "error"), 60, "the launch")
    errors = browser.find_elements(By.ID, "error")
    return errors[0].text if errors else ""


def test_a_bad_pasted_file_gives_the_clis_message_and_writes_nothing(
    browser, own_runs, tmp_path, capsys, tiny_bert, sentiment
):
    runs = own_runs
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "bad", "config": tiny_config(tiny_bert, sentiment, lora_rnak=4)}))
    assert main(["sweep", str(bad), "--dry-run"]) == 2
    cli_message = capsys.readouterr().err.strip().removeprefix("peftlab: error: ")
    with dashboard(runs, *allowed(tiny_bert, sentiment)) as (url, _, _):
        shown = paste(browser, url, bad.read_text())
        assert shown.split(": ", 1)[1] == cli_message.split(": ", 1)[1]  # the same message (file names differ)
        assert "lora_rnak" in shown and "lora_rank" in shown

        # a file outside the allowed roots is refused before anything runs
        outside = tmp_path / "elsewhere.tsv"
        shutil.copy(sentiment["train"], outside)
        sneaky = {"name": "sneaky", "config": tiny_config(tiny_bert, sentiment, train_file=str(outside))}
        shown = paste(browser, url, yaml.safe_dump(sneaky))
        assert str(outside) in shown and "--allow-root" in shown
    # nothing written: no sweep folder, no launch file, no job
    assert sorted(p.relative_to(runs).as_posix() for p in runs.rglob("*")) == [".ui", ".ui/launches"]


def test_a_pasted_file_is_checked_as_its_run_will_read_it(browser, tmp_path, tiny_bert, sentiment):
    """The dashboard runs in a folder inside RUNS_DIR with HOME elsewhere: every path is checked as the
    run reads it (`~` is HOME, a flow-style `base:` is found next to the launch file as the sweep finds
    it); a hub model id and trust_remote_code are refused without their flags. Each used to launch."""
    runs = tmp_path / "runs"
    workdir = runs / "a" / "b" / "c"
    workdir.mkdir(parents=True)
    home, outside = tmp_path / "home", tmp_path / "outside"
    home.mkdir()
    outside.mkdir()
    shutil.copy(sentiment["train"], home / "secret.tsv")
    # ../../../outside/base.yaml: from the launch file (RUNS_DIR/.ui/launches/) tmp_path/outside/base.yaml,
    # which exists; from the working folder RUNS_DIR/outside/base.yaml, inside RUNS_DIR
    (outside / "base.yaml").write_text(yaml.safe_dump(tiny_config(tiny_bert, sentiment, method="head")))
    ok = tiny_config(tiny_bert, sentiment, method="head")
    pasted = {
        "home": yaml.safe_dump({"name": "home", "config": {**ok, "train_file": "~/secret.tsv"}}),
        "base": '{name: based, base: "../../../outside/base.yaml", variants: [{epochs: 1}]}\n',
        "relative": yaml.safe_dump({"name": "rel", "config": {**ok, "train_file": "../../../../outside/x.tsv"}}),
        "hub": yaml.safe_dump({"name": "hub", "config": {**ok, "model": "someorg/some-model"}}),
        "code": yaml.safe_dump({"name": "code", "config": {**ok, "trust_remote_code": True}}),
    }
    shutil.copy(sentiment["train"], outside / "x.tsv")
    with dashboard(runs, *allowed(tiny_bert, sentiment), cwd=workdir, env={"HOME": str(home)}) as (url, _, _):
        shown = {name: paste(browser, url, text) for name, text in pasted.items()}
    assert str(home / "secret.tsv") in shown["home"] and "--allow-root" in shown["home"], shown["home"]
    assert str(outside / "base.yaml") in shown["base"] and "--allow-root" in shown["base"], shown["base"]
    assert str(outside / "x.tsv") in shown["relative"], shown["relative"]
    assert "someorg/some-model" in shown["hub"] and "--allow-hub-models" in shown["hub"], shown["hub"]
    assert "trust_remote_code" in shown["code"] and "--allow-remote-code" in shown["code"], shown["code"]
    # nothing ran: no sweep folder, no job, no launch file left
    assert sorted(p.relative_to(runs).as_posix() for p in runs.rglob("*")) == [
        ".ui",
        ".ui/launches",
        "a",
        "a/b",
        "a/b/c",
    ]


def test_hub_models_and_remote_code_need_the_dashboards_flags(tmp_path, tiny_bert, sentiment):
    """Started with --allow-hub-models / --allow-remote-code the same files validate (and only then)."""
    from peftlab.errors import UserError
    from peftlab.ui.jobs import Jobs

    ok = tiny_config(tiny_bert, sentiment, method="head")
    hub, code = tmp_path / "hub.yaml", tmp_path / "code.yaml"
    hub.write_text(yaml.safe_dump({"name": "hub", "config": {**ok, "model": "someorg/some-model"}}))
    code.write_text(yaml.safe_dump({"name": "code", "config": {**ok, "trust_remote_code": True}}))
    roots = [Path(tiny_bert), Path(sentiment["train"]).parent, tmp_path]
    for path, flag in ((hub, "allow_hub"), (code, "allow_remote_code")):
        with pytest.raises(UserError, match=flag.replace("_", "-")):
            Jobs(tmp_path / "runs", roots).validate(path, trusted=False)
        planned = Jobs(tmp_path / "runs", roots, **{flag: True}).validate(path, trusted=False)
        assert (
            len(planned.runs) == 1
            and planned.runs[0].cfg.model.model == yaml.safe_load(path.read_text())["config"]["model"]
        )


HOSTILE = '</script><script>window.pwned = 1</script><img src=x onerror="window.pwned = 2">'
HOSTILE_NAME = '<img src=x onerror="window.pwned = 3">'  # a run folder may be named so (no slash in it)


def hostile_runs(runs: Path, dest: Path) -> Path:
    """A copy of the module's sweep whose files hold HOSTILE where a user's data or a run's error lands:
    head-s1 failed with it as its error (the reproduced bug: a data file's label in the error message),
    a prediction row's text and label, config.yaml, an .html and an .svg file in a run folder, and a
    run folder named HOSTILE_NAME."""
    evil = dest / "evil"
    shutil.copytree(runs / "methods", evil)
    state = json.loads((evil / layout.SWEEP_STATE).read_text())
    state["runs"][0].update(status="failed", error=f"label {HOSTILE} is not in the training data")
    state["description"] = HOSTILE
    shutil.copytree(evil / "head-s2", evil / HOSTILE_NAME)
    state["runs"].append({**state["runs"][1], "name": HOSTILE_NAME})
    (evil / layout.SWEEP_STATE).write_text(json.dumps(state))
    result = json.loads((evil / "head-s1" / layout.RESULT).read_text())
    result.update(status="failed", error=state["runs"][0]["error"])
    (evil / "head-s1" / layout.RESULT).write_text(json.dumps(result))
    preds = evil / "lora-r4-s1" / layout.predictions_file("validation")
    rows = read_jsonl(preds)
    rows[0].update(text=HOSTILE, prediction=HOSTILE)
    preds.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with open(evil / "lora-r4-s1" / layout.CONFIG, "a") as fh:
        fh.write(f"# {HOSTILE}\n")
    (evil / "lora-r4-s1" / "page.html").write_text(f"<html><body>{HOSTILE}</body></html>")
    (evil / "lora-r4-s1" / "image.svg").write_text(
        f'<svg xmlns="http://www.w3.org/2000/svg"><script>window.pwned = 4</script>{HOSTILE}</svg>'
    )
    return evil


def test_hostile_text_in_run_folders_is_shown_as_text_and_runs_nothing(browser, runs, own_runs):
    """Every page that shows a run folder's text, opened on text written to break out of HTML, a script
    block or an attribute: the text is on the page as written and none of it ran (window.pwned unset);
    the page's own script still ran (the sweep page filled its table from the pushed data)."""
    from selenium.webdriver.common.by import By

    hostile_runs(runs, own_runs)
    quoted = HOSTILE_NAME.replace("<", "%3C").replace(">", "%3E").replace('"', "%22").replace(" ", "%20")
    with dashboard(own_runs) as (url, port, _):
        pages = {
            "/": HOSTILE,  # the sweep's description
            "/sweep/evil": HOSTILE,  # the failed run's error, in the page's data and its table
            "/run/evil/head-s1": HOSTILE,
            "/run/evil/lora-r4-s1": HOSTILE,  # config.yaml
            f"/run/evil/{quoted}": HOSTILE_NAME,
            "/predictions/evil/lora-r4-s1?file=predictions_validation.jsonl": HOSTILE,
            "/file/evil/lora-r4-s1/page.html": HOSTILE,
            "/file/evil/lora-r4-s1/image.svg": HOSTILE,
        }
        for path, shown in pages.items():
            browser.get(url + path)
            wait_for(lambda: browser.execute_script("return document.readyState") == "complete", 30, path)
            assert browser.execute_script("return window.pwned === undefined"), path
            assert shown in browser.find_element(By.TAG_NAME, "body").text, path
            if path == "/sweep/evil":
                wait_for(lambda: browser.find_element(By.TAG_NAME, "body").get_attribute("data-updates"), 30, path)
                row = browser.find_element(By.CSS_SELECTOR, '#sweep-runs tr[data-run="head-s1"]')
                assert HOSTILE in row.text and row.find_elements(By.TAG_NAME, "td")[1].text == "failed"
                names = [r.get_attribute("data-run") for r in browser.find_elements(By.CSS_SELECTOR, "#sweep-runs tr")]
                assert HOSTILE_NAME in names
        # a run folder's files are text (or an image, or a download), never a page
        for name, kind in (("page.html", "text/plain"), ("image.svg", "text/plain"), ("loss.png", "image/png")):
            status, headers, _ = raw_get(port, f"/file/evil/lora-r4-s1/{name}", headers=True)
            assert status == 200 and headers["content-type"].startswith(kind), (name, headers)
            assert headers["x-content-type-options"] == "nosniff"
        weights = next(p for p in (own_runs / "evil" / "lora-r4-s1").rglob("*.safetensors"))
        status, headers, _ = raw_get(port, "/file/" + weights.relative_to(own_runs).as_posix(), headers=True)
        assert status == 200 and headers["content-type"] == "application/octet-stream"
        assert headers["content-disposition"].startswith("attachment")

        # the Content-Security-Policy runs no inline script, even one that reached the page
        browser.get(url + "/")
        browser.execute_script(
            "const s = document.createElement('script'); s.textContent = 'window.pwned = 5';"
            "document.body.appendChild(s);"
        )
        assert browser.execute_script("return window.pwned === undefined")
        csp = raw_get(port, "/", headers=True)[1]["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp


def raw_get(port: int, path: str, host: str = "localhost", headers: bool = False, address: str = "127.0.0.1"):
    """A request with the path exactly as written (a browser would normalize ../ away): (status, body), or
    with headers=True (status, {lower-case name: value}, body)."""
    conn = http.client.HTTPConnection(address, port, timeout=30)
    conn.putrequest("GET", path, skip_host=True)
    conn.putheader("Host", f"{host}:{port}")
    conn.endheaders()
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    if headers:
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    return resp.status, body


def test_paths_outside_the_runs_folder_are_refused(runs, own_runs, tmp_path):
    shutil.copytree(runs / "methods", own_runs / "methods")
    runs = own_runs
    secret = tmp_path / "secret.txt"
    secret.write_text("do not show")
    (runs / "methods" / "head-s1" / "link.txt").symlink_to(secret)
    rel = os.path.relpath(secret, runs / "methods")
    with dashboard(runs) as (_, port, _):
        for path in (
            f"/file/../../{rel}",
            f"/file/methods/{rel}",
            f"/file/methods/..%2F..%2F{rel}",
            "/file/methods/head-s1/link.txt",
            f"/file/{secret}",
            "/run/..%2F..%2F",
            "/predictions/methods/../..",
            f"/predictions/methods/head-s1?file=../../{rel}",
            "/sweep/..%2F",
        ):
            status, body = raw_get(port, path)
            assert status == 404 and b"do not show" not in body, path
        assert raw_get(port, "/file/methods/head-s1/result.json")[0] == 200
        assert raw_get(port, "/", host="attacker.example")[0] == 400  # DNS rebinding: only localhost names
        assert raw_get(port, "/", host="[::1]")[0] == 200  # an IPv6 literal is a localhost name too
        # a POST without the page's token (another site's form) starts nothing
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request(
            "POST",
            "/launch",
            body="source=recipe&recipe=sweeps/demo-sst2-minilm.yaml",
            headers={"Content-Type": "application/x-www-form-urlencoded", "Host": f"localhost:{port}"},
        )
        resp = conn.getresponse()
        assert resp.status == 400 and b"stale" in resp.read()
        assert not (runs / "demo-sst2-minilm").exists()


def test_the_dashboard_answers_on_ipv6_loopback(browser, own_runs):
    """`--host ::1`: the address printed is http://[::1]:PORT/, which answers (it used to print
    http://localhost:PORT/, and localhost is 127.0.0.1 alone on many machines: refused there); a foreign
    host name still gets 400."""
    from selenium.webdriver.common.by import By

    with dashboard(own_runs, "--host", "::1") as (url, port, line):
        assert url.startswith("http://[::1]:"), line
        browser.get(url + "/")
        assert text(browser, "h1") == "Sweeps" and browser.find_elements(By.ID, "runs")
        assert raw_get(port, "/", host="[::1]", address="::1")[0] == 200
        assert raw_get(port, "/", host="attacker.example", address="::1")[0] == 400


def ui_exits(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "peftlab", "ui", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )


def test_the_printed_address_accepts_connections_before_uvicorn_runs():
    """The address is printed once the socket listens: a client that connects at once (a test, a browser
    opened by a script) is queued, not refused while uvicorn is still starting (a CI run failed so)."""
    import socket

    from peftlab.ui.serve import listen_socket

    sock = listen_socket("127.0.0.1", 0)
    try:
        socket.create_connection(sock.getsockname()[:2], timeout=5).close()  # nothing serves it yet
    finally:
        sock.close()


def test_ui_command_errors(tmp_path, capsys):
    assert main(["ui", str(tmp_path / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert main(["ui", str(tmp_path), "--allow-root", str(tmp_path / "nope")]) == 2
    assert "--allow-root" in capsys.readouterr().err
    # a port in use, a host that does not resolve, a port out of range: one line each and exit 2 (they were
    # tracebacks); nothing written into the runs folder
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cases = {
            "in use": (["--port", str(port)], "already in use"),
            "no such host": (["--host", "no-such-host.invalid"], "--host no-such-host.invalid"),
            "port out of range": (["--port", "70000"], "--port 70000"),
        }
        for what, (args, words) in cases.items():
            done = ui_exits(str(tmp_path), *args)
            lines = done.stderr.strip().splitlines()
            assert done.returncode == 2 and len(lines) == 1 and words in lines[0], (what, done.stderr)
            assert lines[0].startswith("peftlab: error: ") and not done.stdout, (what, done.stdout)
    assert list(tmp_path.iterdir()) == []


def test_two_launches_in_one_second_get_their_own_files_and_numbers(tmp_path, monkeypatch, tiny_bert, sentiment):
    """Two dashboards on one RUNS_DIR, and four launches at once in one, all within one second: each launch
    has its own file (with its own text) and its own job number (the second used to overwrite the first's
    file, and two at once to fail on one log file)."""
    from concurrent.futures import ThreadPoolExecutor

    from peftlab.ui import jobs as jobs_module
    from peftlab.ui.jobs import Jobs

    monkeypatch.setattr(jobs_module.time, "strftime", lambda *_: "20260101-120000")
    real_popen, commands = subprocess.Popen, []

    def quick(command, **kwargs):  # the launched process: a quick exit instead of a sweep
        commands.append(command)
        return real_popen([sys.executable, "-c", "pass"], **kwargs)

    monkeypatch.setattr(subprocess, "Popen", quick)
    root, roots = tmp_path / "runs", [Path(tiny_bert), Path(sentiment["train"]).parent]
    sweep = lambda name: yaml.safe_dump({"name": name, "config": tiny_config(tiny_bert, sentiment)})  # noqa: E731
    one, two = Jobs(root, roots), Jobs(root, roots)
    launched = [one.launch_text(sweep("first")), two.launch_text(sweep("second"))]
    with ThreadPoolExecutor(4) as pool:
        launched += list(pool.map(one.launch_text, [sweep(f"at-once-{i}") for i in range(4)]))
    for job in launched:
        job.proc.wait(timeout=60)
    assert len(commands) == 6
    notes = [json.loads((root / ".ui" / "jobs" / f"{job.id}.json").read_text()) for job in launched]
    files = [Path(n["command"][n["command"].index("sweep") + 1]) for n in notes]
    assert len(set(files)) == 6 and all(f.parent == root / ".ui" / "launches" for f in files)
    assert [yaml.safe_load(f.read_text())["name"] for f in files] == [j.folder for j in launched]
    assert sorted(j.id for j in launched) == sorted(f"job{i}" for i in range(1, 7))
    assert sorted(p.name for p in (root / ".ui" / "jobs").glob("*.json")) == sorted(f"job{i}.json" for i in range(1, 7))


def test_a_just_started_job_counts_as_running(tmp_path, monkeypatch):
    """A job is the process its dashboard started, known by pid and start time, whatever its command line
    reads: psutil reads '' (or the dashboard's own) while the new process is still being exec'd, and a live
    sweep used to count as "not running" then (one run in six of the test below)."""
    import psutil

    from peftlab.ui.jobs import Jobs

    jobs = tmp_path / ".ui" / "jobs"
    jobs.mkdir(parents=True)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # no 'peftlab sweep' in it
    try:
        created = psutil.Process(live.pid).create_time()
        for name, when in (("job1", created), ("job2", created - 100)):  # job2: an older process that had the pid
            (jobs / f"{name}.json").write_text(json.dumps({"folder": name, "pid": live.pid, "created": when}))
        seen = Jobs(tmp_path, []).jobs
        assert seen["job1"].running and not seen["job2"].running
        monkeypatch.setattr(psutil.Process, "cmdline", lambda self: [])  # as read mid-exec
        assert seen["job1"].running and not seen["job2"].running
    finally:
        live.kill()
        live.wait(timeout=30)
    assert not Jobs(tmp_path, []).jobs["job1"].running  # it ended


def test_jobs_are_remembered_across_dashboard_restarts(tmp_path):
    """A job file per launch: a new dashboard on the folder shows the earlier jobs and their logs, and a
    new launch gets a new number and its own log (it used to continue job1.log of the last dashboard)."""
    from types import SimpleNamespace

    from peftlab.ui.jobs import Jobs

    gone = tmp_path / "gone.yaml"  # the sweep process exits at once: its file is missing
    first = Jobs(tmp_path, [])
    job = first.start(gone, SimpleNamespace(folder=str(tmp_path / "s")))
    assert job.proc.wait(timeout=120) == 2 and job.returncode == 2 and not job.running
    assert "gone.yaml" in (tmp_path / ".ui" / "jobs" / "job1.log").read_text()
    again = Jobs(tmp_path, [])
    seen = again.jobs["job1"]
    assert (seen.folder, seen.pid, seen.log) == ("s", job.pid, job.log) and not seen.running and seen.returncode is None
    assert again.job_for("s") is seen and any("gone.yaml" in line for line in again.log_tail(seen))
    second = again.start(gone, SimpleNamespace(folder=str(tmp_path / "t")))
    second.proc.wait(timeout=120)
    assert second.id == "job2" and second.log.name == "job2.log" and job.log.read_text().count("gone.yaml") == 1
    (tmp_path / ".ui" / "jobs" / "job3.json").write_text('{"folder": "u", "pi')  # cut short: skipped, not fatal
    assert sorted(Jobs(tmp_path, []).jobs) == ["job1", "job2"]
    # a live sweep is that job's only if it is the process that job started: its pid and its start time
    import psutil

    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "peftlab", "sweep"])
    try:
        created = psutil.Process(live.pid).create_time()
        for name, when in (("job4", created), ("job5", created - 100)):  # job5: an older process that had the pid
            (tmp_path / ".ui" / "jobs" / f"{name}.json").write_text(
                json.dumps({"folder": name, "pid": live.pid, "created": when})
            )
        later = Jobs(tmp_path, [])
        assert later.jobs["job4"].running and not later.jobs["job5"].running
    finally:
        live.kill()
        live.wait(timeout=30)
