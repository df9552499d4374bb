"""The dashboard page in a real browser (Debian's Chromium, headless, via Selenium) against a real gunicorn.

What it shows: the page loads without console errors and displays what the API answers (agents, quick
stats, charts), an HTML log message stays text, the layout fits 1280 px and 390 px (screenshots in the
test's tmp dir; with UPDATE_SCREENSHOTS=1 the 1280-px one also goes to docs/screenshot.png, the README's),
Start/Stop drive a real orchestrator run without a reload, the live stream is used and the page falls
back to polling when it breaks, and a 401 brings up the API-key form. Issue 16 ("what went wrong at a
glance"): the training history lists the runs with a failed one's error, a run opens its record (phases
timeline, agents before/after, errors, the previous run), an agent opens its quality chart and config, the
header says "degraded" while the data source fails, and "Last training" shows its date when not today.

Chromium comes from `make test` (apt-get install chromium chromium-driver when /usr/bin/chromium is absent).
"""
from __future__ import annotations

import base64
import json
import os
import re
import shlex
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from browser import INSTALLED, MISSING, chromium
from conftest import ORCHESTRATOR, PROJECT, SEED, poll, run_orchestrator
from servers import Gunicorn

if not INSTALLED:
    pytest.skip(MISSING, allow_module_level=True)
pytest.importorskip("selenium.webdriver", reason="selenium is not installed (requirements-dev.txt)")
from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

# UPDATE_SCREENSHOTS=1: the 1280-px screenshot also becomes the README's (a normal run leaves the checkout alone).
README_SCREENSHOT = PROJECT / "docs" / "screenshot.png"
API_KEY = "page-test-key-0123456789"
XSS_MESSAGE = 'page test <img src=x onerror="window.__xss=1"><b id="xss-probe">not bold</b> & "quotes"'
STREAM_MAX_SECONDS = 12  # the server ends each stream after this; the page reconnects (used by the fallback test)
# Host alerts come and go with this machine's load: off, so every alert the page shows comes from the data.
NO_HOST_ALERTS = {f"ALERT_{res}_{level}": "100" for res in ("CPU", "MEMORY", "DISK") for level in ("WARNING", "CRITICAL")}
PAGE_SETTINGS = {"HEALTH_SAMPLE_SECONDS": "1", "TRAINING_COMMAND": "python orchestrator.py train --verbose",
                 "ORCHESTRATOR_TIME_SCALE": "0.3", "API_KEY": "", "REQUIRE_AUTH_FOR_READS": "false",
                 "STREAM_HEALTH_SECONDS": "1", "STREAM_MAX_SECONDS": str(STREAM_MAX_SECONDS), **NO_HOST_ALERTS}


def _routes() -> set[str]:
    """The URL rules of the app as the code stands now (start/stop and the stream are being written)."""
    from app import create_app

    with tempfile.TemporaryDirectory() as tmp:
        app = create_app({"TESTING": True, "DATABASE_PATH": Path(tmp) / "db.sqlite", "LOG_FILE": None,
                          "HEALTH_SAMPLE_SECONDS": 0, "INGEST_SECONDS": 0, "TRAINING_RUNS_DIR": Path(tmp) / "runs"})
        return {rule.rule for rule in app.url_map.iter_rules()}


ROUTES = _routes()
needs_training_control = pytest.mark.skipif(
    not {"/api/training/start", "/api/training/stop"} <= ROUTES,
    reason="POST /api/training/start and /api/training/stop are not in app.url_map yet")
needs_stream = pytest.mark.skipif("/api/stream" not in ROUTES, reason="GET /api/stream is not in app.url_map yet")
needs_run_record = pytest.mark.skipif(
    not any(rule.startswith("/api/training/runs/<") for rule in ROUTES),
    reason="GET /api/training/runs/<run_id> (a run's record) is not in app.url_map yet")


# ---------- server and browser ----------

def add_html_log_line(root: Path) -> None:
    """A WARNING line whose message is HTML, after the last run's final line (it must show as text)."""
    log = root / "logs" / "holistic_training.log"
    last = log.read_text(encoding="utf-8").rstrip("\n").rsplit("\n", 1)[-1]
    stamp = last.split(" - ", 1)[0]
    with log.open("a", encoding="utf-8") as handle:
        handle.write(f"{stamp} - HolisticTrainer - WARNING - {XSS_MESSAGE}\n")


def page_orchestrator(_built, tmp: Path) -> Path:
    """A copy of the example orchestrator with 14 days of history, able to `train`, with an HTML log line."""
    root = tmp / "orchestrator"
    shutil.copytree(_built(None, 14), root)
    shutil.copy(ORCHESTRATOR, root / "orchestrator.py")  # TRAINING_COMMAND runs it in the root
    add_html_log_line(root)
    return root


def latest_scores(root: Path) -> dict[str, float]:
    """Each agent's latest quality score in the orchestrator's logs/training_metrics.json."""
    metrics = json.loads((root / "logs" / "training_metrics.json").read_text(encoding="utf-8"))
    return {key.removesuffix("_quality"): points[-1]["score"] for key, points in metrics.items()
            if key.startswith("agent_") and key.endswith("_quality") and points and points[-1].get("score") is not None}


def start_server(root: Path, tmp: Path, **env) -> Gunicorn:
    """gunicorn over `root` with the page's settings (`env` on top), files in tmp/server."""
    return Gunicorn(root, tmp / "server", to_file=True, **{**PAGE_SETTINGS, **env}).start()


def stop_server(server: Gunicorn) -> None:
    """Stop the server; it must exit cleanly and have logged no traceback."""
    assert server.stop() == 0, server.stderr[-3000:]
    assert "Traceback" not in server.logs()


@pytest.fixture(scope="module")
def server(_built, tmp_path_factory):
    """gunicorn over a copy of the example orchestrator with 14 days of history, sampling health every second.

    QUALITY_THRESHOLD sits just above the weakest agent's latest score, so its low-quality alert is always on."""
    tmp = tmp_path_factory.mktemp("page")
    root = page_orchestrator(_built, tmp)
    srv = start_server(root, tmp, QUALITY_THRESHOLD=f"{min(latest_scores(root).values()) + 0.05:.2f}")
    try:
        poll(lambda: srv.get_json("/api/system/health/history?hours=24")[1]["samples"], bool, 20, 0.2)  # for the chart
        yield srv
    finally:
        stop_server(srv)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    driver = chromium(tmp_path_factory.mktemp("chromium-profile"), 1280, 900)
    try:
        yield driver
    finally:
        driver.quit()


def viewport(driver, width: int, height: int) -> None:
    """An exact CSS viewport (a window size would include the browser's own frame)."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})
    wait(driver, 5).until(lambda d: d.execute_script("return window.innerWidth") == width)


def wait(driver, seconds: float = 15):
    return WebDriverWait(driver, seconds, poll_frequency=0.1)


def open_page(driver, server: Gunicorn, width: int = 1280, height: int = 900) -> None:
    viewport(driver, width, height)
    driver.get(server.base + "/")
    wait(driver).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#agents-table tbody tr[data-agent-id]"))


def console_errors(driver) -> list[dict]:
    """SEVERE browser-console entries since the last call (reading the log empties it)."""
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def text(driver, selector: str) -> str:
    return driver.find_element(By.CSS_SELECTOR, selector).text.strip()


def shown_number(value, decimals: int = 2, min_decimals: int = 0) -> str:
    """A number as the page shows it in en-US (toLocaleString with these fraction digits); None is a dash."""
    if value is None:
        return "—"
    shown = f"{value:,.{decimals}f}"
    if "." in shown:
        whole, frac = shown.split(".")
        frac = frac.rstrip("0").ljust(min_decimals, "0")
        shown = f"{whole}.{frac}" if frac else whole
    return shown


def quality_text(value) -> str:
    return shown_number(value, 2, 1)


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", header[16:24])


# ---------- tests ----------

def test_page_shows_what_the_api_answers_without_console_errors(server, browser):
    console_errors(browser)
    answers = [server.get_json("/api/dashboard/quick-stats")[1]]
    open_page(browser, server)

    _, agents = server.get_json("/api/agents/status")
    assert agents, "the example orchestrator has agents"
    rows = wait(browser).until(lambda d: (r := d.find_elements(By.CSS_SELECTOR, "#agents-table tbody tr"))
                               and len(r) == len(agents) and r)
    for row, agent in zip(rows, agents):
        assert row.get_attribute("data-agent-id") == agent["id"]
        assert row.find_element(By.CSS_SELECTOR, '[data-field="name"]').text == agent["name"]
        assert row.find_element(By.CSS_SELECTOR, '[data-field="id"]').text == agent["id"]
        assert row.find_element(By.CSS_SELECTOR, '[data-field="quality_score"]').text == quality_text(
            agent["quality_score"])
        assert row.find_element(By.CSS_SELECTOR, '[data-field="status"]').text == agent["status"]
        assert "pill" in row.find_element(By.CSS_SELECTOR, '[data-field="status"] span').get_attribute("class")

    # Counters can move while the test runs (the 24-hour error window slides), so the page's must lie
    # within what the API answered during the test; the other figures must equal the API's.

    def stats_match(driver):
        _, stats = server.get_json("/api/dashboard/quick-stats")
        answers.append(stats)
        shown = {name: driver.find_element(By.CSS_SELECTOR, f'#quick-stats [data-stat="{name}"]').text.strip()
                 for name in ("agents_online", "agents_total", "overall_quality", "training_running",
                              "active_alerts", "errors_24h")}
        times = driver.find_elements(By.CSS_SELECTOR, '#quick-stats [data-stat="last_training"] time')
        shown["last_training"] = times[0].get_attribute("datetime") if times else None
        expected = {"agents_online": shown_number(stats["agents_online"], 0),
                    "agents_total": shown_number(stats["agents_total"], 0),
                    "overall_quality": quality_text(stats["overall_quality"]),
                    "training_running": "Running" if stats["training_running"] else "Idle",
                    "last_training": stats["last_training"]}
        seen = {name: (min(a[name] for a in answers), max(a[name] for a in answers))
                for name in ("active_alerts", "errors_24h")}
        compared.append((shown, expected, seen))
        return all(shown[k] == v for k, v in expected.items()) and all(
            shown[k].isdigit() and lo <= int(shown[k]) <= hi for k, (lo, hi) in seen.items())

    compared: list[tuple] = []
    try:
        wait(browser, 20).until(stats_match)
    except TimeoutException:
        raise AssertionError(f"quick stats (shown, API, API counters seen) differ: {compared[-1]}") from None

    assert text(browser, "#connection-state") in ("live", "polling")
    assert browser.find_element(By.ID, "progress-bar").get_attribute("aria-valuenow") == "0"
    assert text(browser, '#training-status [data-field="state"]') == "Not running"

    # The HTML in a log message is shown as text, never parsed.
    log_texts = "return [...document.querySelectorAll('#log-list li .text')].map(p => p.textContent)"
    wait(browser).until(lambda d: XSS_MESSAGE in d.execute_script(log_texts))
    assert browser.execute_script("return document.getElementById('xss-probe') === null && !window.__xss")

    # The level filter asks the API again: only warnings.
    browser.find_element(By.CSS_SELECTOR, '#log-level option[value="warning"]').click()
    log_levels = "return [...document.querySelectorAll('#log-list li')].map(li => li.dataset.level)"
    wait(browser).until(lambda d: (levels := d.execute_script(log_levels)) and set(levels) == {"warning"})

    # The fixture's QUALITY_THRESHOLD puts the weakest agents below it: the page shows the API's alerts, theirs too.
    threshold = float(server.env["QUALITY_THRESHOLD"])
    weak = [agent for agent, score in latest_scores(Path(server.env["ORCHESTRATOR_PATH"])).items() if score < threshold]
    _, alerts = server.get_json("/api/system/alerts")
    api_alerts = {a["id"]: a["message"] for a in alerts}
    assert weak and {f"agent.{agent}.low_quality" for agent in weak} <= set(api_alerts), api_alerts
    shown_alerts = "return [...document.querySelectorAll('#alerts-list li')].map(li => [li.dataset.alertId, " \
                   "li.querySelector('.text').textContent])"
    try:
        wait(browser).until(lambda d: dict(d.execute_script(shown_alerts)) == api_alerts)
    except TimeoutException:
        raise AssertionError(f"alerts shown {browser.execute_script(shown_alerts)}, API {api_alerts}") from None
    assert len(browser.find_elements(By.CSS_SELECTOR, '#health-gauges [data-gauge][aria-valuenow]')) == 3

    assert console_errors(browser) == []


def test_quality_and_health_charts_render(server, browser):
    open_page(browser, server)
    _, quality = server.get_json("/api/metrics/quality?days=30")
    _, trends = server.get_json("/api/metrics/trends?days=30")
    _, history = server.get_json("/api/training/history?days=30")
    agent_ids = [k for k in quality if k not in ("timestamps", "system", "warnings")]

    chart = wait(browser).until(lambda d: d.execute_script("""
        const chart = window.Chart && Chart.getChart('quality-chart');
        if (!chart || !chart.data.datasets.length) return null;
        return {labels: chart.data.labels.length,
                datasets: chart.data.datasets.map(ds => ({label: ds.label, agent: ds.agentId || null, data: ds.data}))};
    """))
    by_label = {ds["label"]: ds for ds in chart["datasets"]}
    assert {"System", "System 7-day average"} <= set(by_label)
    assert sorted(ds["agent"] for ds in chart["datasets"] if ds["agent"]) == sorted(agent_ids)
    assert all(len(ds["data"]) == chart["labels"] for ds in chart["datasets"])
    # Every day either answer has, oldest first; the chart leaves out the leading days without any value.
    days = sorted(set(quality["timestamps"]) | set(trends["timestamps"]))[-chart["labels"]:]

    def by_day(source: dict, key: str) -> list:
        """The values of source[key] on the chart's days, None where it has none."""
        values = dict(zip(source["timestamps"], source[key]))
        return [values.get(day) for day in days]

    assert by_label["System"]["data"] == by_day(quality, "system")
    assert by_label["System 7-day average"]["data"] == by_day(trends, "moving_average_7d")
    for ds in chart["datasets"]:
        if ds["agent"]:
            assert ds["data"] == by_day(quality, ds["agent"])
    # The backfill puts one failed run in any 14 days, never the last: a day without a score, a gap in the line.
    failed = [run["date"] for run in history if run["status"] == "failed"]
    assert failed, history
    for day in failed:
        assert 0 < days.index(day) < len(days) - 1 and by_label["System"]["data"][days.index(day)] is None, day

    health = wait(browser).until(lambda d: d.execute_script("""
        const chart = window.Chart && Chart.getChart('health-chart');
        return chart && chart.data.datasets.length ? chart.data.datasets.map(ds => ds.label + ':' +
            ds.data.filter(v => v !== null).length) : null;
    """))
    assert [h.split(":")[0] for h in health] == ["CPU %", "Memory %", "Disk %"]
    assert all(int(h.split(":")[1]) >= 1 for h in health)

    painted = """
        const canvas = document.getElementById(arguments[0]);
        const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        let count = 0;
        for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) count++;
        return count;"""
    for canvas in ("quality-chart", "health-chart"):
        assert browser.execute_script(painted, canvas) > 500, f"{canvas} is blank"
        assert browser.find_element(By.ID, canvas).is_displayed()
    assert not browser.find_element(By.CSS_SELECTOR, '[data-empty-for="health-chart"]').is_displayed()
    assert console_errors(browser) == []


def test_layout_at_1280_and_390_with_screenshots(server, browser, tmp_path):
    open_page(browser, server, 1280, 900)
    wait(browser).until(lambda d: d.execute_script("return !!(window.Chart && Chart.getChart('quality-chart'))"))
    wide = tmp_path / "dashboard-1280x900.png"
    assert browser.save_screenshot(str(wide))
    assert browser.execute_script("return document.documentElement.scrollWidth") <= 1280

    viewport(browser, 390, 844)
    wait(browser).until(lambda d: d.execute_script(  # charts resize on a later frame
        "return document.getElementById('quality-chart').getBoundingClientRect().width <= 390"))
    sizes = browser.execute_script("""
        const scroller = document.querySelector('.table-scroll');
        return {doc: document.documentElement.scrollWidth, body: document.body.scrollWidth,
                table: scroller.scrollWidth, tableBox: scroller.clientWidth,
                chart: document.getElementById('quality-chart').getBoundingClientRect().width};""")
    assert sizes["doc"] <= 390 + 1 and sizes["body"] <= 390 + 1, sizes
    assert sizes["table"] > sizes["tableBox"], "the agents table scrolls inside its box on a narrow screen"
    assert 200 < sizes["chart"] <= 390, sizes
    narrow = tmp_path / "dashboard-390x844.png"
    assert browser.save_screenshot(str(narrow))

    height = browser.execute_script("return document.documentElement.scrollHeight")
    shot = browser.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": 390, "height": height, "scale": 1}})
    full = tmp_path / "dashboard-390-full-page.png"
    full.write_bytes(base64.b64decode(shot["data"]))

    assert png_size(wide) == (1280, 900) and png_size(narrow) == (390, 844)
    assert png_size(full)[0] == 390 and png_size(full)[1] > 844
    for path in (wide, narrow, full):
        assert path.stat().st_size > 20_000, f"{path} looks empty"
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        shutil.copyfile(wide, README_SCREENSHOT)
    viewport(browser, 1280, 900)
    assert console_errors(browser) == []


@needs_stream
def test_live_stream_then_polling_fallback_then_live_again(server, browser):
    open_page(browser, server)
    state = lambda d: d.find_element(By.ID, "connection-state").text  # noqa: E731
    wait(browser, 10).until(lambda d: state(d) == "live")

    # Live: the gauges follow the stream's health events (the page does not poll while live).
    measured = lambda d: d.execute_script(  # noqa: E731
        "const t = document.querySelector('#health-gauges [data-field=\"timestamp\"] time');"
        "return t ? t.getAttribute('datetime') : null;")
    first = wait(browser).until(measured)
    wait(browser, 10).until(lambda d: measured(d) not in (None, first))

    # The stream breaks (the server ends it after STREAM_MAX_SECONDS; reconnecting is blocked): polling.
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["*/api/stream*"]})
    try:
        wait(browser, STREAM_MAX_SECONDS + 10).until(lambda d: state(d) == "polling")
        polled = measured(browser)
        wait(browser, 12).until(lambda d: measured(d) != polled)  # GET /api/system/health every 5 s
        assert state(browser) == "polling"
    finally:
        browser.execute_cdp_cmd("Network.setBlockedURLs", {"urls": []})
        browser.execute_cdp_cmd("Network.disable", {})
    # ... and it keeps trying: live again once the stream can be reached.
    wait(browser, 30).until(lambda d: state(d) == "live")
    errors = console_errors(browser)
    assert all("api/stream" in e["message"] for e in errors), errors  # only the blocked reconnects


@needs_training_control
def test_start_and_stop_a_real_run_without_reloading(server, browser):
    open_page(browser, server)
    status = lambda d: d.find_element(By.ID, "training-status").get_attribute("data-running")  # noqa: E731
    wait(browser).until(lambda d: status(d) == "false")
    start, stop = browser.find_element(By.ID, "start-training"), browser.find_element(By.ID, "stop-training")
    assert start.is_enabled() and not stop.is_enabled()
    browser.execute_script("window.__sameDocument = 'still here';")

    def progress(driver) -> float:
        """The progress bar's value while the page shows a run (0 otherwise)."""
        now = driver.find_element(By.ID, "progress-bar").get_attribute("aria-valuenow")
        return float(now) if now is not None and status(driver) == "true" else 0.0

    start.click()
    first = wait(browser, 25).until(progress)
    try:
        wait(browser, 25).until(lambda d: progress(d) > first)
    except TimeoutException:
        raise AssertionError(f"progress did not increase from {first}: {progress(browser)}") from None
    started = text(browser, "#training-message")
    assert started.startswith("Training started"), started
    session = int(re.search(r"session (\d+)", started).group(1))
    assert not start.is_enabled()

    wait(browser).until(lambda d: d.find_element(By.ID, "stop-training").is_enabled())
    browser.find_element(By.ID, "stop-training").click()
    wait(browser, 20).until(lambda d: status(d) == "false")
    message = browser.find_element(By.ID, "training-message")
    wait(browser, 10).until(lambda d: "Training stopped" in message.text or message.get_attribute("data-kind") == "error")
    assert message.get_attribute("data-kind") == "ok", message.text
    assert text(browser, '#training-status [data-field="state"]') == "Not running"
    assert browser.find_element(By.ID, "progress-bar").get_attribute("aria-valuenow") == "0"
    assert browser.execute_script("return window.__sameDocument") == "still here", "the page was reloaded"
    code, body = server.get_json(f"/api/training/session/{session}")
    assert code == 200 and body["status"] == "stopped", body
    wait(browser).until(lambda d: d.find_element(By.ID, "start-training").is_enabled())
    assert console_errors(browser) == []


@needs_training_control
def test_a_401_asks_for_the_key_and_sends_it(_built, tmp_path, browser):
    """API_KEY set: reads stay open, Start answers 401, the form asks, the retry carries the key."""
    srv = start_server(page_orchestrator(_built, tmp_path), tmp_path, API_KEY=API_KEY)
    try:
        console_errors(browser)
        open_page(browser, srv)
        form = browser.find_element(By.ID, "auth-form")
        assert not form.is_displayed()

        browser.find_element(By.ID, "start-training").click()
        wait(browser).until(lambda d: form.is_displayed())
        assert "missing API key" in text(browser, "#auth-message")
        browser.find_element(By.ID, "auth-key").send_keys("wrong-key-0000000000")
        browser.find_element(By.CSS_SELECTOR, "#auth-form button[type=submit]").click()
        wait(browser).until(lambda d: form.is_displayed() and "invalid API key" in text(d, "#auth-message"))
        browser.find_element(By.ID, "auth-key").send_keys(API_KEY)
        browser.find_element(By.CSS_SELECTOR, "#auth-form button[type=submit]").click()
        wait(browser, 15).until(lambda d: text(d, "#training-message").startswith("Training started"))
        assert not form.is_displayed()
        assert browser.execute_script("return sessionStorage.getItem('training-dashboard.api-key')") == API_KEY

        # The stored key goes with the next POST without asking again.
        wait(browser).until(lambda d: d.find_element(By.ID, "stop-training").is_enabled())
        browser.find_element(By.ID, "stop-training").click()
        message = browser.find_element(By.ID, "training-message")
        wait(browser, 20).until(lambda d: "Training stopped" in message.text or message.get_attribute("data-kind") == "error")
        assert message.get_attribute("data-kind") == "ok", message.text
        assert not form.is_displayed()
        # The only console errors are the two 401 answers.
        errors = console_errors(browser)
        assert len(errors) == 2 and all("401" in e["message"] for e in errors), errors
    finally:
        browser.execute_script("sessionStorage.clear()")
        browser.get("about:blank")  # no page polls the server while it stops
        console_errors(browser)
        stop_server(srv)


def test_reads_behind_a_key_ask_once_and_poll_with_it(_built, tmp_path, browser):
    """REQUIRE_AUTH_FOR_READS: every GET answers 401 until the key is given; then the page polls with it
    (an EventSource cannot send the header). HEALTH_SAMPLE_SECONDS=0: the health chart's empty state."""
    srv = start_server(page_orchestrator(_built, tmp_path), tmp_path, API_KEY=API_KEY, REQUIRE_AUTH_FOR_READS="true",
                       HEALTH_SAMPLE_SECONDS="0")
    try:
        console_errors(browser)
        viewport(browser, 1280, 900)
        browser.get(srv.base + "/")
        form = browser.find_element(By.ID, "auth-form")
        wait(browser).until(lambda d: form.is_displayed() and "missing API key" in text(d, "#auth-message"))
        assert browser.find_elements(By.CSS_SELECTOR, "#agents-table tbody tr") == []
        browser.find_element(By.ID, "auth-key").send_keys("wrong-key-0000000000")
        browser.find_element(By.CSS_SELECTOR, "#auth-form button[type=submit]").click()
        wait(browser).until(lambda d: form.is_displayed() and "invalid API key" in text(d, "#auth-message"))
        browser.find_element(By.ID, "auth-key").send_keys(API_KEY)
        browser.find_element(By.CSS_SELECTOR, "#auth-form button[type=submit]").click()

        _, agents = srv.get_json("/api/agents/status", headers={"Authorization": f"Bearer {API_KEY}"})
        wait(browser).until(lambda d: d.execute_script(
            "return [...document.querySelectorAll('#agents-table tbody tr')].map(r => r.dataset.agentId)")
            == [a["id"] for a in agents])
        assert not form.is_displayed() and browser.find_element(By.ID, "auth-open").is_displayed()
        empty = wait(browser).until(lambda d: (e := d.find_element(By.CSS_SELECTOR, '[data-empty-for="health-chart"]'))
                                    .is_displayed() and e)
        assert "HEALTH_SAMPLE_SECONDS=0" in empty.text
        assert not browser.find_element(By.ID, "health-chart").is_displayed()
        wait(browser).until(lambda d: d.execute_script("return !!(window.Chart && Chart.getChart('quality-chart'))"))
        first = text(browser, "#last-refresh")
        wait(browser, 12).until(lambda d: text(d, "#last-refresh") != first)  # it keeps polling with the key
        assert text(browser, "#connection-state") == "polling"
        assert not form.is_displayed()
        assert browser.execute_script("return sessionStorage.getItem('training-dashboard.api-key')") == API_KEY
        errors = console_errors(browser)
        assert errors and all("401" in e["message"] for e in errors), errors
    finally:
        browser.execute_script("sessionStorage.clear()")
        browser.get("about:blank")  # no page polls the server while it stops
        console_errors(browser)
        stop_server(srv)


class _Blank(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        body = b"<!doctype html><title>other origin</title>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


FETCH_FROM_PAGE = """
const done = arguments[arguments.length - 1];
const [url, post] = arguments;
fetch(url, post ? {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify({name: "cors"})}
               : {})
  .then(r => r.json().then(body => done({status: r.status, body})))
  .catch(err => done({error: String(err)}));
"""


def test_a_fetch_from_an_allowed_origin_works_and_others_are_refused(_built, tmp_path, browser):
    origins = []
    for _ in range(2):
        http_server = ThreadingHTTPServer(("127.0.0.1", 0), _Blank)
        threading.Thread(target=http_server.serve_forever, daemon=True).start()
        origins.append(http_server)
    allowed, other = (f"http://localhost:{s.server_address[1]}" for s in origins)
    srv = start_server(page_orchestrator(_built, tmp_path), tmp_path, CORS_ORIGINS=allowed)
    try:
        browser.set_script_timeout(15)
        browser.get(allowed + "/")
        read = browser.execute_async_script(FETCH_FROM_PAGE, srv.base + "/api/agents/status", False)
        assert read["status"] == 200 and [a["id"] for a in read["body"]] == [a["id"] for a in srv.get_json("/api/agents/status")[1]]
        write = browser.execute_async_script(FETCH_FROM_PAGE, srv.base + "/api/storyboard/project/create", True)
        assert write["status"] == 201 and write["body"]["name"] == "cors"

        browser.get(other + "/")
        refused = browser.execute_async_script(FETCH_FROM_PAGE, srv.base + "/api/agents/status", False)
        assert "error" in refused and "Failed to fetch" in refused["error"]
        blocked = browser.execute_async_script(FETCH_FROM_PAGE, srv.base + "/api/storyboard/project/create", True)
        assert "error" in blocked
        assert [p["name"] for p in srv.get_json("/api/storyboard/projects")[1]] == ["cors"]  # the preflight stopped it
    finally:
        stop_server(srv)
        for http_server in origins:
            http_server.shutdown()
            http_server.server_close()


# ---------- issue 16: what went wrong at a glance ----------

# The fixture's own agent config: the agent panel must show these, whatever the example's config says.
AGENT_CONFIG = {"enabled": False, "priority": "low",
                "description": 'page test config <b id="config-probe">not bold</b> & "quotes"'}


def set_agent_config(root: Path, agent: str, config: dict) -> None:
    path = root / "training" / "config.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data["training"]["agent_training"][agent] = config
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")


@pytest.fixture(scope="module")
def failed_server(_built, tmp_path_factory):
    """gunicorn over 14 days of history plus a run just now that failed (ORCHESTRATOR_FAIL=1); one agent's
    config is the test's own (AGENT_CONFIG)."""
    tmp = tmp_path_factory.mktemp("page-failed")
    root = tmp / "orchestrator"
    shutil.copytree(_built(None, 14), root)
    agent = sorted(latest_scores(root))[1]
    set_agent_config(root, agent, AGENT_CONFIG)
    failed = subprocess.run([sys.executable, str(ORCHESTRATOR), "train", "--root", str(root)], capture_output=True,
                            text=True, timeout=60,
                            env={**os.environ, "ORCHESTRATOR_TIME_SCALE": "0.05", "ORCHESTRATOR_FAIL": "1"})
    assert failed.returncode == 1, failed.stderr[-2000:]
    srv = start_server(root, tmp)
    srv.agent = agent
    try:
        yield srv
    finally:
        stop_server(srv)


def shot(driver, path: Path) -> Path:
    """A screenshot of the viewport, checked to be a real picture."""
    assert driver.save_screenshot(str(path))
    assert path.stat().st_size > 10_000, f"{path} looks empty"
    return path


def page_fits(driver, width: int) -> None:
    sizes = driver.execute_script(
        "return [document.documentElement.scrollWidth, document.body.scrollWidth]")
    assert max(sizes) <= width + 1, f"the page scrolls sideways at {width} px: {sizes}"


HISTORY_ROWS = """return [...document.querySelectorAll('#history-list li.run-item')].map(li => ({
    started: li.dataset.startedAt || null, status: li.dataset.status,
    pill: li.querySelector('[data-field="status"] .pill').textContent,
    error: li.querySelector('[data-field="error"]')?.textContent ?? null,
    origin: li.querySelector('[data-field="origin"]').textContent,
    duration: li.querySelector('[data-field="duration"]').textContent,
    run: li.dataset.runId || null}));"""


@pytest.mark.parametrize("width", [1280, 390])
def test_history_lists_the_runs_newest_first_with_the_failed_runs_error(failed_server, browser, tmp_path, width):
    console_errors(browser)
    open_page(browser, failed_server, width, 900 if width > 600 else 844)
    _, runs = failed_server.get_json("/api/training/history?days=30")
    newest = runs[0]
    assert newest["status"] == "failed" and newest["error"], newest  # the fixture's failed run, just now
    try:
        rows = wait(browser).until(lambda d: (r := d.execute_script(HISTORY_ROWS)) and len(r) == len(runs) and r)
    except TimeoutException:
        raise AssertionError(f"history shown {browser.execute_script(HISTORY_ROWS)}, API {len(runs)} runs") from None
    assert [r["started"] for r in rows] == [run["started_at"] for run in runs]
    assert [r["started"] for r in rows] == sorted((r["started"] for r in rows), reverse=True)
    for row, run in zip(rows, runs):
        assert (row["status"], row["pill"], row["origin"]) == (run["status"], run["status"], run["origin"])
        assert row["error"] == run["error"]
        assert row["run"] == (str(run["run_id"]) if run.get("run_id") is not None else None)
    top = browser.find_element(By.CSS_SELECTOR, "#history-list li.run-item")
    assert top.find_element(By.CSS_SELECTOR, '[data-field="error"]').is_displayed()
    assert "run-bad" in top.find_element(By.CSS_SELECTOR, ".pill").get_attribute("class")

    # "Last training" is the failed run, today: a time without a date.
    last = browser.find_element(By.CSS_SELECTOR, '#quick-stats [data-stat="last_training"] time')
    assert last.get_attribute("datetime") == failed_server.get_json("/api/dashboard/quick-stats")[1]["last_training"]
    assert not re.search(r"[A-Z][a-z]{2} \d", last.text), last.text

    browser.execute_script("document.querySelector('.card.history').scrollIntoView()")
    page_fits(browser, width)
    shot(browser, tmp_path / f"history-{width}.png")
    assert console_errors(browser) == []


def open_record(driver, run_id) -> None:
    driver.find_element(By.CSS_SELECTOR, f'#history-list [data-open-run="{run_id}"]').click()
    dialog = driver.find_element(By.ID, "run-record")
    wait(driver).until(lambda d: dialog.is_displayed() and dialog.get_attribute("data-run-id") == str(run_id)
                       and d.find_element(By.CSS_SELECTOR, "#run-record .record").is_displayed())


def close_dialog(driver, dialog_id: str) -> None:
    driver.find_element(By.CSS_SELECTOR, f"#{dialog_id} [data-close]").click()
    wait(driver).until(lambda d: not d.find_element(By.ID, dialog_id).is_displayed())


@needs_run_record
@pytest.mark.parametrize("width", [1280, 390])
def test_a_run_opens_its_record(failed_server, browser, tmp_path, width):
    console_errors(browser)
    open_page(browser, failed_server, width, 900 if width > 600 else 844)
    _, runs = failed_server.get_json("/api/training/history?days=30")
    failed = runs[0]
    assert failed["status"] == "failed" and failed.get("run_id") is not None, failed
    code, record = failed_server.get_json(f"/api/training/runs/{failed['run_id']}")
    assert code == 200, record
    wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, f'[data-open-run="{failed["run_id"]}"]'))
    open_record(browser, failed["run_id"])

    dialog = browser.find_element(By.ID, "run-record")
    field = lambda name: dialog.find_element(By.CSS_SELECTOR, f'[data-field="{name}"]')  # noqa: E731
    assert field("status").text == record["status"] == "failed"
    assert field("origin").text == (record["origin"] or "—")
    assert (field("started_by").text, field("stopped_by").text) == (record["started_by"] or "—", record["stopped_by"] or "—")
    assert field("overall_quality").text == quality_text(record["overall_quality"])
    # The phases: one timeline segment per phase with a duration, widths in the durations' proportions.
    timed = [p for p in record["phases"] if isinstance(p["duration_seconds"], (int, float)) and p["duration_seconds"] > 0]
    segments = browser.execute_script("""return [...document.querySelectorAll('#run-record .timeline .segment')]
        .map(s => [s.dataset.phase, s.getBoundingClientRect().width]);""")
    assert [name for name, _ in segments] == [p["name"] or "" for p in timed]
    if len(timed) >= 2:
        total = sum(p["duration_seconds"] for p in timed)
        bar = sum(w for _, w in segments)
        for (_, w), p in zip(segments, timed):
            assert abs(w / bar - p["duration_seconds"] / total) < 0.05 or w <= 4, (segments, timed)
    assert len(dialog.find_elements(By.CSS_SELECTOR, '[data-field="phases"] li[data-phase]')) == len(record["phases"])
    # The agents before and after, "—" where the record has no value.
    rows = dialog.find_elements(By.CSS_SELECTOR, '[data-field="agents"] tr[data-agent-id]')
    assert len(rows) == len([a for a in record["agents"] if a["id"]])
    for row, agent in zip(rows, [a for a in record["agents"] if a["id"]]):
        assert row.get_attribute("data-agent-id") == agent["id"]
        assert row.find_element(By.CSS_SELECTOR, '[data-field="quality_before"]').text == quality_text(agent["quality_before"])
        assert row.find_element(By.CSS_SELECTOR, '[data-field="quality_after"]').text == quality_text(agent["quality_after"])
    # The error lines: a failed run has some, and the page shows each message as text.
    assert record["errors"], record
    shown = browser.execute_script("""return [...document.querySelectorAll('#run-record [data-field="errors"] li')]
        .map(li => li.querySelector('.text').textContent
                   + (li.querySelector('.trace pre') ? '\\n' + li.querySelector('.trace pre').textContent : ''));""")
    assert shown == [e["message"] for e in record["errors"]]
    # The previous run.
    previous = record["previous"]
    if previous is None:
        assert "No earlier run" in field("previous").text
    else:
        assert field("previous_run_id").text == str(previous["run_id"])
        changes = previous["phase_duration_change"] or {}
        assert len(dialog.find_elements(By.CSS_SELECTOR, ".phase-changes [data-phase]")) == len(changes)

    page_fits(browser, width)
    shot(browser, tmp_path / f"run-record-{width}.png")
    close_dialog(browser, "run-record")
    assert console_errors(browser) == []


def agent_chart(driver):
    return driver.execute_script("""
        const chart = window.Chart && Chart.getChart('agent-chart');
        return chart && chart.data.datasets.length ? {agent: chart.data.datasets[0].agentId,
            data: chart.data.datasets[0].data, width: chart.width} : null;""")


@pytest.mark.parametrize("width", [1280, 390])
def test_an_agent_opens_its_quality_chart_and_config(failed_server, browser, tmp_path, width):
    console_errors(browser)
    open_page(browser, failed_server, width, 900 if width > 600 else 844)
    agent_id = failed_server.agent
    _, agent = failed_server.get_json(f"/api/agents/{agent_id}")
    assert agent["config"] == AGENT_CONFIG, agent["config"]  # the fixture's own config, through the API
    browser.find_element(By.CSS_SELECTOR, f'#agents-table [data-open-agent="{agent_id}"]').click()
    dialog = browser.find_element(By.ID, "agent-detail")
    wait(browser).until(lambda d: dialog.is_displayed() and dialog.get_attribute("data-agent-id") == agent_id)
    chart = wait(browser).until(lambda d: (c := agent_chart(d)) and c["agent"] == agent_id and c["width"] > 100 and c)
    assert chart["data"] == [p["score"] for p in agent["quality_history"]]
    assert chart["width"] <= width
    field = lambda name: dialog.find_element(By.CSS_SELECTOR, f'[data-field="{name}"]').text  # noqa: E731
    assert (field("config.enabled"), field("config.priority")) == ("no", "low")
    assert field("config.description") == AGENT_CONFIG["description"]
    assert browser.execute_script("return document.getElementById('config-probe') === null")
    assert field("name") == agent["name"] and field("module") == (agent["module"] or "—")
    page_fits(browser, width)
    shot(browser, tmp_path / f"agent-{width}.png")
    close_dialog(browser, "agent-detail")
    assert console_errors(browser) == []


@needs_run_record
def test_an_agent_in_a_runs_record_opens_its_chart(failed_server, browser, tmp_path):
    open_page(browser, failed_server)
    _, runs = failed_server.get_json("/api/training/history?days=30")
    run = next(r for r in runs if r["status"] == "completed" and r.get("run_id") is not None)
    wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, f'[data-open-run="{run["run_id"]}"]'))
    open_record(browser, run["run_id"])
    _, record = failed_server.get_json(f"/api/training/runs/{run['run_id']}")
    agents = [a["id"] for a in record["agents"] if a["id"]]
    assert agents, record
    agent_id = agents[0]
    assert len(browser.find_elements(By.CSS_SELECTOR, '#run-record [data-field="agents"] tr[data-agent-id]')) == len(agents)
    shot(browser, tmp_path / "run-record-completed-1280.png")
    browser.find_element(By.CSS_SELECTOR, f'#run-record [data-open-agent="{agent_id}"]').click()
    wait(browser).until(lambda d: (c := agent_chart(d)) and c["agent"] == agent_id)
    close_dialog(browser, "agent-detail")
    close_dialog(browser, "run-record")
    assert console_errors(browser) == []


def test_header_says_degraded_while_the_data_source_fails_and_last_training_shows_its_date(_built, tmp_path,
                                                                                            browser):
    """History that ended three days ago; then the orchestrator folder goes away (data source: error)."""
    root = tmp_path / "orchestrator"
    shutil.copytree(_built(None, 0), root)
    end = datetime.now().date() - timedelta(days=3)
    run_orchestrator("backfill", "--root", str(root), "--days", "5", "--end", end.isoformat(), "--seed", str(SEED))
    srv = start_server(root, tmp_path)
    moved = tmp_path / "orchestrator-away"
    try:
        console_errors(browser)
        open_page(browser, srv)
        conn = lambda d: d.find_element(By.ID, "connection-state").get_attribute("data-state")  # noqa: E731
        wait(browser).until(lambda d: conn(d) in ("live", "polling"))
        _, stats = srv.get_json("/api/dashboard/quick-stats")
        last = datetime.fromisoformat(stats["last_training"].replace("Z", "+00:00")).astimezone()
        assert last.date() < datetime.now().date(), stats
        day = f"{last:%b} {last.day}"  # en-US month and day, as toLocaleString shows it
        node = wait(browser).until(lambda d: (t := d.find_elements(
            By.CSS_SELECTOR, '#quick-stats [data-stat="last_training"] time')) and t[0])
        assert node.get_attribute("datetime") == stats["last_training"]
        assert day in node.text, (day, node.text)

        root.rename(moved)
        poll(lambda: srv.get_json("/api/status")[1], lambda s: s["data_source"] != "ok", 10, 0.2)
        wait(browser, 20).until(lambda d: conn(d) == "degraded")
        assert text(browser, "#connection-state") == "degraded"
        assert "data source" in browser.find_element(By.ID, "connection-state").get_attribute("title")
        shot(browser, tmp_path / "degraded-1280.png")
        viewport(browser, 390, 844)
        page_fits(browser, 390)
        shot(browser, tmp_path / "degraded-390.png")
        viewport(browser, 1280, 900)

        moved.rename(root)
        wait(browser, 20).until(lambda d: conn(d) in ("live", "polling"))
    finally:
        if moved.exists():
            moved.rename(root)
        browser.get("about:blank")
        console_errors(browser)
        stop_server(srv)


@needs_training_control
def test_a_run_that_has_not_logged_its_first_phase_shows_starting(_built, tmp_path, browser):
    """A TRAINING_COMMAND that only waits: the run never shows a phase in the log, so it stays "starting"."""
    srv = start_server(page_orchestrator(_built, tmp_path), tmp_path,
                       TRAINING_COMMAND=f"python -c {shlex.quote('import time; time.sleep(120)')}")
    try:
        console_errors(browser)
        open_page(browser, srv)
        browser.find_element(By.ID, "start-training").click()
        poll(lambda: srv.get_json("/api/training/status")[1]["current_phase"], lambda p: p == "starting", 15, 0.1)
        phase = '#training-status [data-field="current_phase"]'
        wait(browser, 15).until(lambda d: text(d, phase) == "Starting")
        wait(browser).until(lambda d: d.find_element(By.ID, "stop-training").is_enabled())
        browser.find_element(By.ID, "stop-training").click()
        wait(browser, 20).until(lambda d: text(d, phase) == "Idle")
        assert console_errors(browser) == []
    finally:
        browser.get("about:blank")
        console_errors(browser)
        stop_server(srv)


def test_an_alerts_ack_button_acknowledges_it(server, browser):
    """Each active alert has an Ack button; a click acknowledges it (the API says so) and the alert shows
    as acknowledged instead of the button."""
    console_errors(browser)
    open_page(browser, server)
    button = '#alerts-list li[data-acknowledged="false"] button[data-action="ack"]'
    wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, button))
    # The list is drawn afresh on every stream event: find and click in one step, read it back by script.
    alert_id = browser.execute_script("const b = document.querySelector(arguments[0]); b.click();"
                                      " return b.dataset.alertId", button)
    shown = ("const li = document.querySelector(`#alerts-list li[data-alert-id=\"${arguments[0]}\"]`);"
             " return li && [li.dataset.acknowledged, !!li.querySelector('button[data-action=ack]'),"
             " li.querySelector('.acked')?.textContent ?? '']")
    wait(browser).until(lambda d: (seen := d.execute_script(shown, alert_id)) and seen[0] == "true")
    acknowledged, has_button, label = browser.execute_script(shown, alert_id)
    assert not has_button and label.startswith("acknowledged")
    listed = {a["id"]: a for a in server.get_json("/api/system/alerts")[1]}
    assert listed[alert_id]["acknowledged"] is True and listed[alert_id]["acknowledged_at"]
    assert console_errors(browser) == []
