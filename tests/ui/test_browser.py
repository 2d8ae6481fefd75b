"""The dashboard in a real headless Chromium (Debian's ``chromium`` + ``chromium-driver``, driven by Selenium).

``make test`` installs Chromium when it is missing; without it these tests are skipped
with that reason. ``TUNEFORGE_SCREENSHOTS=docs/screenshots`` keeps the screenshots for the README.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from tests.ui.fake_runs import append_metrics, write_run
from tuneforge.serve import background_server
from tuneforge.ui import create_app

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = [
    pytest.mark.slow,  # Chromium takes ~30 s to start and run on a 2-core machine
    pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver (make test installs them)"),
]


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900",
                "--disable-gpu", "--no-first-run"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


@pytest.fixture
def shots(tmp_path):
    folder = Path(os.environ.get("TUNEFORGE_SCREENSHOTS") or tmp_path / "shots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def wait_for(check, timeout=15.0, show=None):
    """Poll ``check`` until it is truthy. The live pages re-render while a check reads them, so an
    element found a moment ago may be gone: that read counts as "not yet", and the next poll finds the new one."""
    from selenium.common.exceptions import StaleElementReferenceException

    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except StaleElementReferenceException:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {check.__doc__ or check}" + (f": {show()}" if show else ""))
        time.sleep(0.1)


def test_runs_live_curve_and_predictions_in_a_browser(browser, shots, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    runs = tmp_path / "runs"
    write_run(runs, "support-bot", predictions=200, metrics_steps=40)
    write_run(runs, "lr-too-high", state="failed", error="loss became NaN at step 7", metrics_steps=7)
    live = write_run(runs, "training-now", state="running", pid=os.getpid(), metrics_steps=3)
    with background_server(create_app(runs, keys=None)) as url:
        # --- the runs list, filtered in the page
        browser.get(url + "/")
        rows = lambda: browser.find_elements(By.CSS_SELECTOR, "#runs tbody tr[data-name]")  # noqa: E731
        wait_for(lambda: len(rows()) == 3)
        assert "loss became NaN at step 7" in browser.find_element(By.ID, "runs").text
        browser.save_screenshot(str(shots / "runs.png"))
        browser.find_element(By.ID, "run-filter").send_keys("high")
        wait_for(lambda: [r.get_attribute("data-name") for r in rows()] == ["lr-too-high"])

        # --- a run that trains: its loss curve grows as metrics.jsonl grows, then the state turns finished
        browser.get(url + "/runs/training-now")

        def points() -> int:
            lines = browser.find_elements(By.CSS_SELECTOR, "#chart-loss polyline.train")
            return int(lines[0].get_attribute("data-points")) if lines else 0

        wait_for(lambda: points() == 3)

        # The curve grows with each batch of lines the run appends, without a reload. (Batches the test
        # waits on, not a timed thread: under load a poll could otherwise first see the curve finished.)
        append_metrics(live, range(4, 11))
        wait_for(lambda: points() == 10)
        append_metrics(live, range(11, 31))
        wait_for(lambda: points() == 30)
        browser.save_screenshot(str(shots / "run.png"))

        # The final evaluation's progress arrives as training writes it, with an ETA from its pace.
        progress = lambda: browser.find_element(By.ID, "eval-progress").text  # noqa: E731
        evaluating = {"phase": "generating (training-now)", "done": 3, "total": 8, "examples": 4, "models": 2, "elapsed_s": 6.0}
        (live / "eval" / "progress.json").write_text(json.dumps(evaluating))
        wait_for(lambda: progress().startswith("evaluating: 3 / 8 examples"), show=progress)
        assert "ETA 10 s" in progress() and "(4 examples × 2 models)" in progress()
        # The run ends (killed, say) before the evaluation does: the line says where it stopped.
        status = json.loads((live / "status.json").read_text())
        (live / "status.json").write_text(json.dumps({**status, "state": "failed", "error": "killed"}))
        wait_for(lambda: browser.find_element(By.ID, "run-state").text == "failed")
        assert progress() == "evaluation ended at 3 / 8 examples (run failed)"

        # --- predictions filtered to wrong→right
        browser.get(url + "/runs/support-bot/predictions")
        assert "200 examples" in browser.find_element(By.ID, "count").text
        Select(browser.find_element(By.ID, "kind")).select_by_value("wrong_to_right")
        wait_for(lambda: "kind=wrong_to_right" in browser.current_url)
        expected = sum(1 for i in range(200) if i % 5 != 1 and not (i % 3 == 0 and i % 7 != 6))
        assert browser.find_element(By.ID, "count").text.startswith(f"{expected} examples")
        cells = browser.find_elements(By.CSS_SELECTOR, "#predictions tr.example td.wrong, #predictions tr.example td.right")
        assert cells and all("wrong" in c.get_attribute("class") for c in cells[0::2])  # base wrong, tuned right
        browser.save_screenshot(str(shots / "predictions.png"))


def test_playground_streams_two_answers_side_by_side(browser, shots, model_runs):
    from selenium.webdriver.common.by import By

    with background_server(create_app(model_runs, keys=None)) as url:
        browser.get(url + "/playground")
        browser.find_element(By.ID, "prompt").send_keys("My card was charged twice for order 1234")
        browser.find_element(By.ID, "max_tokens").clear()
        browser.find_element(By.ID, "max_tokens").send_keys("24")
        browser.find_element(By.ID, "send").click()
        status = lambda side: browser.find_element(By.ID, f"status-{side}").text  # noqa: E731
        wait_for(lambda: status("a").startswith("done") and status("b").startswith("done"), timeout=60,
                 show=lambda: (status("a"), status("b"), browser.get_log("browser")))
        # textContent: the tiny random model's answers may be mostly whitespace, which .text would strip
        answers = [browser.find_element(By.ID, f"answer-{side}").get_attribute("textContent") for side in ("a", "b")]
        assert all(answers) and answers[0] != answers[1]  # base and tuned, each streamed into its own column
        assert status("a") == status("b") == "done: 24 tokens (length)"
        browser.save_screenshot(str(shots / "playground.png"))


def test_launch_shows_errors_at_their_line_then_runs_to_the_end(browser, shots, tmp_path, tiny_config):
    from selenium.webdriver.common.by import By

    runs = tmp_path / "runs"
    with background_server(create_app(runs, keys=None)) as url:
        browser.get(url + "/launch")
        editor = browser.find_element(By.ID, "config")
        typo = tiny_config("from-browser").replace("max_steps:", "max_stepz:")
        browser.execute_script("arguments[0].value = arguments[1]", editor, typo)
        browser.find_element(By.ID, "validate").click()
        bad = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#annotated tr.bad"))
        assert len(bad) == 1 and "max_stepz" in bad[0].text and "did you mean 'max_steps'" in bad[0].text
        browser.save_screenshot(str(shots / "launch.png"))

        editor = browser.find_element(By.ID, "config")
        browser.execute_script("arguments[0].value = arguments[1]", editor, tiny_config("from-browser", evaluate=True))
        browser.find_element(By.ID, "start").click()
        wait_for(lambda: browser.current_url.endswith("/runs/from-browser"))
        # The page follows the run over server-sent events and turns its badge when training ends.
        wait_for(lambda: browser.find_element(By.ID, "run-state").text == "finished", timeout=240,
                 show=lambda: (browser.find_element(By.ID, "run-state").text, browser.find_element(By.ID, "step").text,
                               browser.get_log("browser"), (runs / ".launch" / "from-browser.log").read_text()[-300:]))
        assert (runs / "from-browser" / "manifest.json").is_file()
        # The final evaluation's progress reached the page over the same stream (4 examples, tuned and base).
        progress = browser.find_element(By.ID, "eval-progress")
        assert progress.get_attribute("data-done") == progress.get_attribute("data-total") == "8"
        assert progress.text.startswith("evaluated: 8 / 8 examples")


def test_compare_overlays_each_runs_curve(browser, shots, tmp_path):
    from selenium.webdriver.common.by import By

    runs = tmp_path / "runs"
    for name, steps, scale in (("lr-2e-4", 40, 2.0), ("lr-1e-4", 30, 3.0), ("lr-5e-5", 20, 4.5)):
        write_run(runs, name, metrics_steps=steps, loss_scale=scale)
    with background_server(create_app(runs, keys=None)) as url:
        browser.get(url + "/compare?run=lr-2e-4&run=lr-1e-4&run=lr-5e-5")
        lines = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#compare-loss polyline"))
        assert [int(line.get_attribute("data-points")) for line in lines] == [40, 30, 20]
        assert len({line.get_attribute("style") for line in lines}) == 3  # one colour per run
        assert len(browser.find_elements(By.CSS_SELECTOR, "#compare-table tbody tr")) == 3
        browser.save_screenshot(str(shots / "compare.png"))


def test_data_page_shows_lengths_and_trained_tokens(browser, shots, finished_run):
    from selenium.webdriver.common.by import By

    with background_server(create_app(finished_run.parent, keys=None)) as url:
        browser.get(url + "/runs/tiny")
        browser.find_element(By.LINK_TEXT, "token lengths and training examples").click()
        bars = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#length-histogram rect.bar"))
        recorded = json.loads((finished_run / "data" / "lengths.json").read_text())["train"]
        assert sum(int(b.get_attribute("data-count")) for b in bars) == sum(c for _, c in recorded)
        marks = browser.find_elements(By.CSS_SELECTOR, "#training-examples mark.trained")
        assert len(marks) == 10 and all(m.text.endswith("<|im_end|>") for m in marks)  # one answer per example
        assert marks[0].value_of_css_property("background-color") != "rgba(0, 0, 0, 0)"  # visibly highlighted
        browser.execute_script("arguments[0].scrollIntoView()", browser.find_element(By.ID, "length-histogram"))
        browser.save_screenshot(str(shots / "data.png"))
        browser.find_element(By.CSS_SELECTOR, "nav.pager a[rel=next]").click()
        wait_for(lambda: "page 2 of" in browser.find_element(By.CSS_SELECTOR, "nav.pager").text)
        assert browser.find_elements(By.CSS_SELECTOR, "#training-examples td.num")[0].text == "10"


def test_export_a_finished_run_from_its_page(browser, shots, finished_run, tmp_path):
    from selenium.webdriver.common.by import By

    runs = tmp_path / "runs"
    shutil.copytree(finished_run, runs / "tiny")
    with background_server(create_app(runs, keys=None)) as url:
        browser.get(url + "/runs/tiny")
        browser.find_element(By.ID, "export-hf").click()
        # One script per look: the page reloads itself when the export ends, and an element found
        # before that reload would be stale after it.
        row = lambda what: browser.execute_script(  # noqa: E731
            f"const r = document.querySelector('#exports tr[data-kind=hf]'); return r && r.{what}")
        wait_for(lambda: row("dataset.state") == "finished", timeout=240, show=lambda: row("innerText"))
        text = row("innerText")
        assert str(runs / "tiny" / "export" / "hf") in text and "model.safetensors" in text
        browser.save_screenshot(str(shots / "export.png"))


def test_upload_data_then_use_it_in_the_config(browser, shots, tmp_path, tiny_config):
    from selenium.webdriver.common.by import By

    from tests.train.conftest import write_tickets

    runs = tmp_path / "runs"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "input": "b", "output": "c"}\n{"instruction": "a", "output": 3}\n')
    good = write_tickets(tmp_path / "tickets.jsonl", n=30)
    with background_server(create_app(runs, keys=None)) as url:
        browser.get(url + "/launch")
        browser.execute_script("arguments[0].value = arguments[1]", browser.find_element(By.ID, "config"), tiny_config("up"))
        browser.find_element(By.ID, "data-file").send_keys(str(bad))
        browser.find_element(By.ID, "upload").click()
        problem = wait_for(lambda: browser.find_elements(By.ID, "upload-problem"))[0].text
        assert "bad.jsonl:2" in problem and "output" in problem
        browser.find_element(By.ID, "data-file").send_keys(str(good))
        browser.find_element(By.ID, "upload").click()
        ok = wait_for(lambda: browser.find_elements(By.ID, "upload-ok"))[0].text
        assert ok.startswith("tickets.jsonl: 30 rows, format alpaca") and str(runs / "_uploads") in ok
        browser.save_screenshot(str(shots / "upload.png"))
        browser.find_element(By.ID, "use").click()
        wait_for(lambda: browser.find_elements(By.ID, "note"))
        config = browser.find_element(By.ID, "config").get_attribute("value")
        assert f"train: {(runs / '_uploads').resolve()}/" in config and "name: up" in config
