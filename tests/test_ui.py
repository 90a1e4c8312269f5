"""The run browser (`cd4ml ui`) as a person uses it: the real command serving over HTTP, Debian's
headless Chromium driven by Selenium through chromium-driver (nothing downloads a browser), on
the real runs of the session's trained home. Screenshots go to the test's temporary directory.

The store is a copy of the trained home's (its artifacts stay where the runs wrote them), so the
hostile records this module adds (a bucket object and a drifted feature carrying HTML) touch no
other test, and the copy's bytes show the browser wrote nothing. Other test modules may have run
more pipelines in that home before: the tests look for the two trained runs by id.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
import sys
import time
import urllib.parse

import pytest
import requests

from serving.launch import free_port

pytestmark = pytest.mark.slow

HOSTILE_OBJECT = 'incoming/<img src=x id=pwned onerror="document.title=1">.csv'
HOSTILE_FEATURE = "<b id=bold>temp</b>"


def sha256(path: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


@pytest.fixture(scope="module")
def ui_home(trained_home, tmp_path_factory):
    """The trained home's runs, reports and artifacts; its own store copy and serving logs."""
    from cd4ml.mlmd import records, store
    from serving.logs import JsonlLog

    work = tmp_path_factory.mktemp("ui")
    metadata = str(work / "metadata.sqlite")
    shutil.copyfile(trained_home.config.metadata_path, metadata)
    mlmd = store.open_store(metadata)
    records.put(mlmd, records.DROP, {"bucket": "cd4ml-ui", "object": HOSTILE_OBJECT, "object_generation": "7",
                                     "outcome": "trained", "span": 2, "run_id": trained_home.span2.run_id,
                                     "version": trained_home.span2.pushed_version},
                name=f"gs://cd4ml-ui/{HOSTILE_OBJECT}#7", context_name="gs://cd4ml-ui/incoming/")
    logs = str(work / "serving-logs")
    version = trained_home.span2.pushed_version
    drift, predictions, feedback = (JsonlLog(logs, n) for n in ("drift", "predictions", "feedback"))
    drift.write({"ts": "2026-12-01T10:00:00+00:00", "version": version, "is_drift": True, "rows": 200,
                 "p_vals": {HOSTILE_FEATURE: 0.001}, "drifted": [HOSTILE_FEATURE]})
    predictions.write({"ts": "2026-12-01T10:00:00+00:00", "request_id": "r1", "version": version,
                       "rows": [{}, {}], "predictions": [10.0, 20.0]})
    feedback.write({"ts": "2026-12-01T10:00:01+00:00", "request_id": "r1", "version": version, "matched": True,
                    "truth": [12, 26], "abs_errors": [2.0, 6.0]})
    for log in (drift, predictions, feedback):
        log.close()
    return {"home": trained_home.config.home, "data_root": trained_home.config.data_root, "metadata": metadata,
            "logs": logs, "trained": trained_home, "work": work}


def cd4ml(*args):
    return [sys.executable, "-m", "cd4ml.cli", *args]


@pytest.fixture(scope="module")
def ui(ui_home):
    port = free_port()
    env = dict(os.environ, CD4ML_METADATA_PATH=ui_home["metadata"])
    out = open(ui_home["work"] / "ui.log", "w")
    process = subprocess.Popen(cd4ml("ui", "--home", ui_home["home"], "--data-root", ui_home["data_root"],
                                     "--log-dir", ui_home["logs"], "--port", str(port)),
                               env=env, stdout=out, stderr=subprocess.STDOUT, cwd=str(ui_home["work"]))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if requests.get(f"{url}/runs", timeout=30).status_code == 200:
                break
        except requests.RequestException:
            pass
        assert process.poll() is None and time.monotonic() < deadline, open(ui_home["work"] / "ui.log").read()
        time.sleep(0.3)
    yield url
    process.terminate()
    process.wait(timeout=20)


def chromium_paths():
    browser = shutil.which("chromium") or "/usr/bin/chromium"
    driver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if not (os.access(browser, os.X_OK) and os.access(driver, os.X_OK)):
        raise RuntimeError("the browser tests need Debian's chromium and chromium-driver "
                           "(`make system-deps` installs them: apt-get install chromium chromium-driver)")
    return browser, driver


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = chromium_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1000", f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    chrome = webdriver.Chrome(options=options, service=Service(driver))
    chrome.set_page_load_timeout(120)
    yield chrome
    chrome.quit()


@pytest.fixture
def shots(tmp_path):
    def shot(browser, name):
        path = str(tmp_path / f"{name}.png")
        assert browser.save_screenshot(path) and os.path.getsize(path) > 5000
        return path
    return shot


def by(css):
    from selenium.webdriver.common.by import By

    return By.CSS_SELECTOR, css


def row_of(browser, run_id):
    """The runs page's row of one run."""
    (row,) = [r for r in browser.find_elements(*by("tr.run-row"))
              if r.find_element(*by("a.run-link")).text == run_id]
    return row


def test_runs_to_run_to_version_to_span_files(ui, browser, ui_home, shots):
    trained = ui_home["trained"]
    browser.get(f"{ui}/runs")
    links = [a.text for a in browser.find_elements(*by("a.run-link"))]
    assert links.index(trained.span2.run_id) < links.index(trained.span1.run_id)  # newest first
    assert links == sorted(links, reverse=True)
    second, first = row_of(browser, trained.span2.run_id), row_of(browser, trained.span1.run_id)
    assert "drop" in second.text and "manual" in first.text  # the drop recorded for the span-2 run
    assert "2, 1" in second.text and trained.span2.pushed_version in second.text  # the window, the version
    # What each run used, as ML Metadata records it (pipelines/usage.py).
    cpu = float(second.find_element(*by("td.cpu")).text)
    assert cpu > 0 and float(second.find_element(*by("td.peak")).text) > 100
    shots(browser, "runs")

    row_of(browser, trained.span2.run_id).find_element(*by("a.run-link")).click()
    assert browser.find_element(*by("#run-id")).text == trained.span2.run_id
    dag = browser.find_element(*by("svg#run-dag"))
    assert dag.is_displayed() and dag.size["width"] > 600
    drawn = {g.get_attribute("data-node") for g in dag.find_elements(*by("g.node"))}
    assert {"CsvExampleGen", "Transform", "Trainer", "Evaluator", "Pusher", "TrainingWindow"} <= drawn
    assert len(dag.find_elements(*by("path[marker-end]"))) >= 12  # the edges are drawn too
    assert browser.find_element(*by("#window")).text == "2, 1"
    text = browser.find_element(*by("main")).text
    assert "no anomalies" in text and "mean_absolute_error <=" in text and "season=3" in text
    assert "bikers" in browser.find_element(*by("#statistics")).text
    assert "optional" in browser.find_element(*by("#schema")).text  # casual/registered
    assert "CPU s" in browser.find_element(*by("#run-usage")).text
    trainer = browser.find_element(*by("#components tr[data-node=Trainer]"))
    schema = browser.find_element(*by("#components tr[data-node=ImportSchemaGen]"))  # cached in span 2's run
    assert float(trainer.find_element(*by("td.cpu")).text) > 0 and float(trainer.find_element(*by("td.peak")).text) > 0
    assert float(schema.find_element(*by("td.cpu")).text) < float(trainer.find_element(*by("td.cpu")).text)
    shots(browser, "run")

    browser.find_element(*by("#pushed-version")).click()
    assert browser.find_element(*by("#version")).text == trained.span2.pushed_version
    card = browser.find_element(*by("#model-card"))  # the version's model card (components/model_card.py)
    assert "bikes rented in an hour" in card.find_element(*by("#card-purpose")).text
    assert "span 2 (data drop), span 1 (data drop)" in card.text and "explainability check passed" in card.text
    assert "CPU s" in card.find_element(*by("#card-usage")).text and "in 2 run(s)" in card.text
    lineage = browser.find_element(*by("svg#lineage-dag"))
    drawn = {g.get_attribute("data-node") for g in lineage.find_elements(*by("g.node"))}
    assert {"span-2", "span-1", "release"} <= drawn
    files = [e.text for e in browser.find_elements(*by("#window .span-file"))]
    assert files == [os.path.join(trained.config.data_root, f"span-{s}", "bikeshare.csv") for s in (2, 1)]
    assert "live MAE 4.00" in browser.find_element(*by("#live")).text  # from the serving logs
    shots(browser, "version")

    browser.find_elements(*by("#window a.span-link"))[1].click()
    assert browser.find_element(*by("#span")).text == "1"
    assert os.path.join("span-1", "bikeshare.csv") in browser.find_element(*by("#files")).text
    assert trained.span1.pushed_version in browser.find_element(*by("main")).text  # models trained on it
    shots(browser, "span")


def test_compare_two_runs(ui, browser, ui_home, shots):
    trained = ui_home["trained"]
    browser.get(f"{ui}/runs")
    for run in (trained.span1, trained.span2):
        row_of(browser, run.run_id).find_element(*by("input[name=pick]")).click()
    browser.find_element(*by("#compare-button")).click()
    assert "/compare?" in browser.current_url
    query = urllib.parse.parse_qs(urllib.parse.urlparse(browser.current_url).query)
    assert (query["a"], query["b"]) == ([trained.span1.run_id], [trained.span2.run_id])  # older first
    changed = browser.find_element(*by("#changed")).text
    assert "spans trained on" in changed and "pushed version" in changed and "CPU" not in changed
    rows = {r.find_element(*by("th")).text: r for r in browser.find_elements(*by("#compare tr"))
            if r.find_elements(*by("td"))}
    assert all(float(td.text) > 0 for td in rows["CPU seconds (all components)"].find_elements(*by("td")))
    table = browser.find_element(*by("#metrics")).text
    assert "overall" in table and "season=3" in table
    shots(browser, "compare")


def test_hostile_names_show_as_text(ui, browser, ui_home, shots):
    browser.get(f"{ui}/runs")
    row = row_of(browser, ui_home["trained"].span2.run_id)
    assert row.find_element(*by(".trigger-detail")).text == f"gs://cd4ml-ui/{HOSTILE_OBJECT}#7"
    assert browser.find_elements(*by("#pwned")) == [] and browser.title != "1"
    row.find_element(*by("a.version-link")).click()
    assert browser.find_element(*by("#drift .drifted")).text == HOSTILE_FEATURE
    assert browser.find_elements(*by("#bold")) == []
    hostile_run = "<img src=x id=pwned2 onerror=\"document.title='x'\">"
    browser.get(f"{ui}/runs/" + urllib.parse.quote(hostile_run, safe=""))
    assert f"No run {hostile_run} in" in browser.find_element(*by("#missing")).text
    assert browser.find_elements(*by("#pwned2")) == [] and browser.title != "x"
    browser.get(f"{ui}/no/such/<b>page</b>")
    assert "No page /no/such/<b>page</b>" in browser.find_element(*by("#missing")).text
    shots(browser, "hostile")


def test_nothing_writes_and_only_reads_are_served(ui, ui_home):
    before = sha256(ui_home["metadata"])
    for path in ("/runs", "/runs?status=ok", "/compare?a=x&b=y", "/spans/2"):
        assert requests.get(f"{ui}{path}", timeout=60).status_code in (200, 404)
    assert requests.post(f"{ui}/runs", timeout=30).status_code == 405
    assert sha256(ui_home["metadata"]) == before
    dropped = requests.get(f"{ui}/runs?trigger=drop", timeout=30).text  # the filter: only the dropped run
    assert dropped.count('class="run-row"') == 1 and ui_home["trained"].span2.run_id in dropped


def test_the_ui_binds_to_loopback_by_default():
    from cd4ml import cli

    args = cli.build_parser().parse_args(["ui"])
    assert (args.host, args.port) == ("127.0.0.1", 8080)


def test_static_export_opens_and_links_in_the_browser(ui_home, browser, tmp_path, shots):
    out = tmp_path / "site"
    env = dict(os.environ, CD4ML_METADATA_PATH=ui_home["metadata"])
    done = subprocess.run(cd4ml("ui", "--home", ui_home["home"], "--data-root", ui_home["data_root"],
                                "--log-dir", ui_home["logs"], "--export", str(out)),
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "exported" in done.stdout
    pages = {os.path.basename(p) for p in glob.glob(str(out / "*.html"))}
    assert "index.html" in pages and any(p.startswith("version-") for p in pages)
    # Every relative link of every page resolves to an exported file.
    import re

    for page in pages:
        text = (out / page).read_text()
        for href in re.findall(r'href="([^"#?:]+\.html)"', text):
            assert href in pages, (page, href)
    browser.get(f"file://{out}/index.html")
    row_of(browser, ui_home["trained"].span2.run_id).find_element(*by("a.run-link")).click()
    assert browser.find_element(*by("svg#run-dag")).is_displayed()
    browser.find_element(*by("#pushed-version")).click()
    assert browser.find_element(*by("svg#lineage-dag")).is_displayed()
    assert browser.find_elements(*by("#pwned")) == []
    shots(browser, "exported-version")


def test_the_browser_reads_a_mysql_store_too(mysql_home):
    """The same pages over the team's MariaDB store (no browser needed to see they render)."""
    from cd4ml.ui.app import create_app
    from cd4ml.ui.data import Browser

    client = create_app(Browser(mysql_home.config)).test_client()
    runs = client.get("/runs").get_data(as_text=True)
    assert mysql_home.span1.run_id in runs and mysql_home.span2.run_id in runs
    run = client.get(f"/runs/{mysql_home.span2.run_id}").get_data(as_text=True)
    assert 'id="run-dag"' in run and "Trainer" in run
    version = client.get(f"/versions/{mysql_home.span2.pushed_version}")
    assert version.status_code == 200 and "span-2" in version.get_data(as_text=True)
    password = urllib.parse.urlparse(mysql_home.config.metadata_path).password
    assert password and password not in runs and mysql_home.config.metadata_path not in runs
