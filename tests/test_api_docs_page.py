"""/api/docs in a real browser (Debian's Chromium, headless, via Selenium) against a real gunicorn: Swagger UI
renders every operation of /api/openapi.json from this server's own files, under the page CSP, without
console errors (a CSP violation or a failed asset load is one). Screenshot: test-artifacts/api_docs.png."""
from __future__ import annotations

import pytest

from browser import INSTALLED, MISSING, chromium
from conftest import PROJECT
from servers import Gunicorn

if not INSTALLED:
    pytest.skip(MISSING, allow_module_level=True)
pytest.importorskip("selenium.webdriver", reason="selenium is not installed (requirements-dev.txt)")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture
def server(orchestrator, tmp_path):
    with Gunicorn(orchestrator(), tmp_path / "server", GUNICORN_WORKERS="1") as srv:
        yield srv


@pytest.fixture
def browser(tmp_path):
    driver = chromium(tmp_path / "chromium-profile", 1280, 1800)
    try:
        yield driver
    finally:
        driver.quit()


def test_docs_page_renders_every_operation_under_the_csp(server, browser):
    status, headers, _ = server.request("GET", "/api/docs")
    assert status == 200 and "script-src 'self'" in headers["Content-Security-Policy"]
    _, doc = server.get_json("/api/openapi.json")
    operations = sum(len(item) for item in doc["paths"].values())

    browser.get(server.base + "/api/docs")
    wait = WebDriverWait(browser, 20, poll_frequency=0.1)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) == operations)
    assert "Training Dashboard API" in browser.find_element(By.CSS_SELECTOR, ".info .title").text
    (PROJECT / "test-artifacts").mkdir(exist_ok=True)
    browser.save_screenshot(str(PROJECT / "test-artifacts" / "api_docs.png"))
    # one operation opened: its parameters and responses come from the document
    browser.find_element(By.CSS_SELECTOR, "#operations-training-training_history .opblock-summary-control").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#operations-training-training_history .parameters tr[data-param-name='days']"))
    assert browser.find_elements(By.CSS_SELECTOR, "#operations-training-training_history .responses-table tr[data-code='400']")
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    requested = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)")
    assert requested and all(url.startswith(server.base) or url.startswith("data:") for url in requested), requested
