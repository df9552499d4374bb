"""The dashboard page in a real browser (Debian's Chromium, headless, via Selenium) against a real gunicorn.

What it shows: the page loads without console errors and displays what the API answers (agents, quick
stats, charts), an HTML log message stays text, the layout fits 1280 px and 390 px (screenshots in
test-artifacts/), Start/Stop drive a real orchestrator run without a reload, the live stream is used and
the page falls back to polling when it breaks, and a 401 brings up the API-key form.

Chromium comes from `make test` (apt-get install chromium chromium-driver when /usr/bin/chromium is absent).
"""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from browser import INSTALLED, MISSING, chromium
from conftest import ORCHESTRATOR, PROJECT
from servers import free_port, wait_for_port

if not INSTALLED:
    pytest.skip(MISSING, allow_module_level=True)
pytest.importorskip("selenium.webdriver", reason="selenium is not installed (requirements-dev.txt)")
from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

ARTIFACTS = PROJECT / "test-artifacts"
API_KEY = "page-test-key-0123456789"
XSS_MESSAGE = 'page test <img src=x onerror="window.__xss=1"><b id="xss-probe">not bold</b> & "quotes"'
STREAM_MAX_SECONDS = 12  # the server ends each stream after this; the page reconnects (used by the fallback test)


def _routes() -> set[str]:
    """The URL rules of the app as the code stands now (start/stop and the stream are being written)."""
    from app import create_app

    with tempfile.TemporaryDirectory() as tmp:
        app = create_app({"TESTING": True, "DATABASE_PATH": Path(tmp) / "db.sqlite", "LOG_FILE": None,
                          "HEALTH_SAMPLE_SECONDS": 0, "TRAINING_RUNS_DIR": Path(tmp) / "runs"})
        return {rule.rule for rule in app.url_map.iter_rules()}


ROUTES = _routes()
needs_training_control = pytest.mark.skipif(
    not {"/api/training/start", "/api/training/stop"} <= ROUTES,
    reason="POST /api/training/start and /api/training/stop are not in app.url_map yet")
needs_stream = pytest.mark.skipif("/api/stream" not in ROUTES, reason="GET /api/stream is not in app.url_map yet")


# ---------- server and browser ----------

class Server:
    def __init__(self, base: str, proc: subprocess.Popen, log: Path):
        self.base, self.proc, self.log = base, proc, log

    def get(self, path: str, key: str | None = None):
        request = urllib.request.Request(self.base + path, headers={"Authorization": f"Bearer {key}"} if key else {})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as err:
            with err:
                return err.code, json.loads(err.read())


def add_html_log_line(root: Path) -> None:
    """A WARNING line whose message is HTML, after the last run's final line (it must show as text)."""
    log = root / "logs" / "holistic_training.log"
    last = log.read_text(encoding="utf-8").rstrip("\n").rsplit("\n", 1)[-1]
    stamp = last.split(" - ", 1)[0]
    with log.open("a", encoding="utf-8") as handle:
        handle.write(f"{stamp} - HolisticTrainer - WARNING - {XSS_MESSAGE}\n")


def start_server(_built, tmp: Path, **env) -> Server:
    root = tmp / "orchestrator"
    shutil.copytree(_built(None, 14), root)
    shutil.copy(ORCHESTRATOR, root / "orchestrator.py")  # TRAINING_COMMAND runs it in the root
    add_html_log_line(root)
    port = free_port()
    environ = {**os.environ, "ENVIRONMENT": "local", "HOST": "127.0.0.1", "PORT": str(port),
               "ORCHESTRATOR_PATH": str(root), "DATABASE_PATH": str(tmp / "db.sqlite"),
               "LOG_FILE": str(tmp / "server.log"), "HEALTH_SAMPLE_SECONDS": "1",
               "TRAINING_RUNS_DIR": str(tmp / "runs"), "TRAINING_COMMAND": "python orchestrator.py train --verbose",
               "ORCHESTRATOR_TIME_SCALE": "0.3", "API_KEY": "", "REQUIRE_AUTH_FOR_READS": "false",
               "STREAM_HEALTH_SECONDS": "1", "STREAM_MAX_SECONDS": str(STREAM_MAX_SECONDS), **env}
    proc = subprocess.Popen([str(Path(sys.executable).with_name("gunicorn")), "--config", "gunicorn.conf.py",
                             "app:app"], cwd=PROJECT, env=environ, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_for_port(port, proc)
    return Server(f"http://127.0.0.1:{port}", proc, tmp / "server.log")


def stop_server(server: Server) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()
    assert "Traceback" not in server.log.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def server(_built, tmp_path_factory):
    """gunicorn over a copy of the example orchestrator with 14 days of history, sampling health every second."""
    srv = start_server(_built, tmp_path_factory.mktemp("page"))
    try:
        deadline = time.monotonic() + 20
        while not srv.get("/api/system/health/history?hours=24")[1]["samples"]:  # the health chart needs one
            assert time.monotonic() < deadline, "no health sample was stored"
            time.sleep(0.2)
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


def open_page(driver, server: Server, width: int = 1280, height: int = 900) -> None:
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
    answers = [server.get("/api/dashboard/quick-stats")[1]]
    open_page(browser, server)

    _, agents = server.get("/api/agents/status")
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

    # Alert and error counters move while the test runs (host alerts fire and clear under load), so the
    # page's must lie within what the API answered during the test; the others must equal the API's.

    def stats_match(driver):
        _, stats = server.get("/api/dashboard/quick-stats")
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

    # Host alerts (host.cpu, ...) come and go with the load of the test machine; the others are stable.
    _, alerts = server.get("/api/system/alerts")
    shown_alerts = wait(browser).until(lambda d: d.execute_script(
        "return [...document.querySelectorAll('#alerts-list li')].map(li => li.dataset.alertId)"))
    stable = lambda ids: sorted(i for i in ids if not i.startswith("host."))  # noqa: E731
    assert stable(shown_alerts) == stable(a["id"] for a in alerts) != []
    assert len(browser.find_elements(By.CSS_SELECTOR, '#health-gauges [data-gauge][aria-valuenow]')) == 3

    assert console_errors(browser) == []


def test_quality_and_health_charts_render(server, browser):
    open_page(browser, server)
    _, quality = server.get("/api/metrics/quality?days=30")
    _, trends = server.get("/api/metrics/trends?days=30")
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
    non_null = lambda values: [v for v in values if v is not None]  # noqa: E731
    assert non_null(by_label["System"]["data"]) == non_null(quality["system"])
    assert non_null(by_label["System 7-day average"]["data"]) == non_null(trends["moving_average_7d"])
    assert None in by_label["System"]["data"], "a day without a score is a gap (the example has a failed day)"
    for ds in chart["datasets"]:
        if ds["agent"]:
            assert non_null(ds["data"]) == non_null(quality[ds["agent"]])

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


def test_layout_at_1280_and_390_with_screenshots(server, browser):
    ARTIFACTS.mkdir(exist_ok=True)
    open_page(browser, server, 1280, 900)
    wait(browser).until(lambda d: d.execute_script("return !!(window.Chart && Chart.getChart('quality-chart'))"))
    wide = ARTIFACTS / "dashboard-1280x900.png"
    wide.unlink(missing_ok=True)
    assert browser.save_screenshot(str(wide))
    assert browser.execute_script("return document.documentElement.scrollWidth") <= 1280

    viewport(browser, 390, 844)
    time.sleep(0.5)  # charts resize on the next frame
    sizes = browser.execute_script("""
        const scroller = document.querySelector('.table-scroll');
        return {doc: document.documentElement.scrollWidth, body: document.body.scrollWidth,
                table: scroller.scrollWidth, tableBox: scroller.clientWidth,
                chart: document.getElementById('quality-chart').getBoundingClientRect().width};""")
    assert sizes["doc"] <= 390 + 1 and sizes["body"] <= 390 + 1, sizes
    assert sizes["table"] > sizes["tableBox"], "the agents table scrolls inside its box on a narrow screen"
    assert 200 < sizes["chart"] <= 390, sizes
    narrow = ARTIFACTS / "dashboard-390x844.png"
    narrow.unlink(missing_ok=True)
    assert browser.save_screenshot(str(narrow))

    height = browser.execute_script("return document.documentElement.scrollHeight")
    shot = browser.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": 390, "height": height, "scale": 1}})
    full = ARTIFACTS / "dashboard-390-full-page.png"
    full.write_bytes(base64.b64decode(shot["data"]))

    assert png_size(wide) == (1280, 900) and png_size(narrow) == (390, 844)
    assert png_size(full)[0] == 390 and png_size(full)[1] > 844
    for path in (wide, narrow, full):
        assert path.stat().st_size > 20_000, f"{path} looks empty"
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

    start.click()
    values: list[float] = []
    deadline = time.monotonic() + 25
    while time.monotonic() < deadline:
        now = browser.find_element(By.ID, "progress-bar").get_attribute("aria-valuenow")
        if now is not None and float(now) > 0 and status(browser) == "true" and (not values or float(now) != values[-1]):
            values.append(float(now))
        if len(values) >= 2 and values[-1] > values[0]:
            break
        time.sleep(0.05)
    assert len(values) >= 2 and values[-1] > values[0], f"progress did not increase: {values}"
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
    code, body = server.get(f"/api/training/session/{session}")
    assert code == 200 and body["status"] == "stopped", body
    wait(browser).until(lambda d: d.find_element(By.ID, "start-training").is_enabled())
    assert console_errors(browser) == []


@needs_training_control
def test_a_401_asks_for_the_key_and_sends_it(_built, tmp_path, browser):
    """API_KEY set: reads stay open, Start answers 401, the form asks, the retry carries the key."""
    srv = start_server(_built, tmp_path, API_KEY=API_KEY)
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
    srv = start_server(_built, tmp_path, API_KEY=API_KEY, REQUIRE_AUTH_FOR_READS="true", HEALTH_SAMPLE_SECONDS="0")
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

        _, agents = srv.get("/api/agents/status", key=API_KEY)
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
    srv = start_server(_built, tmp_path, CORS_ORIGINS=allowed)
    try:
        browser.set_script_timeout(15)
        browser.get(allowed + "/")
        read = browser.execute_async_script(FETCH_FROM_PAGE, srv.base + "/api/agents/status", False)
        assert read["status"] == 200 and [a["id"] for a in read["body"]] == [a["id"] for a in srv.get("/api/agents/status")[1]]
        write = browser.execute_async_script(FETCH_FROM_PAGE, srv.base + "/api/storyboard/project/create", True)
        assert write["status"] == 201 and write["body"]["name"] == "cors"

        browser.get(other + "/")
        refused = browser.execute_async_script(FETCH_FROM_PAGE, srv.base + "/api/agents/status", False)
        assert "error" in refused and "Failed to fetch" in refused["error"]
        blocked = browser.execute_async_script(FETCH_FROM_PAGE, srv.base + "/api/storyboard/project/create", True)
        assert "error" in blocked
        assert [p["name"] for p in srv.get("/api/storyboard/projects")[1]] == ["cors"]  # the preflight stopped it
    finally:
        stop_server(srv)
        for http_server in origins:
            http_server.shutdown()
            http_server.server_close()
