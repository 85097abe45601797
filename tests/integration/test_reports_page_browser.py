"""The reports page in a real headless Chromium (Debian's chromium + chromium-driver, driven by Selenium).

Checks what a user sees: the chart is drawn, a selector's pass rate on the
page is the one the store holds, hostile reporter names appear as text (no
markup, no script), and the drill-down shows the records behind a row.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from mailseal.reports.serve import PageContext, make_server
from mailseal.reports.sqlite_store import SqliteReportStore
from mailseal.reports.xmlparse import parse_report_bytes
from support.clock import FIXED_NOW
from support.dmarc_reports import DAY, Row, Sig, Spec, key_store_with_one_key, report_xml
from support.required import needs

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
HOSTILE = "<img src=x onerror=\"document.title='pwned'\"><script>document.title='pwned'</script>Evil 'Corp'"

pytestmark = [
    pytest.mark.integration,
    needs(
        bool(shutil.which(CHROMEDRIVER)) and os.path.exists(CHROMIUM),
        "chromium and chromium-driver",
        "apt-get install chromium chromium-driver; pip install selenium",
    ),
]


def _fill(path: Path) -> SqliteReportStore:
    store = SqliteReportStore(path)
    ours = "s2026"
    for day in range(10):
        begin = FIXED_NOW - (10 - day) * DAY
        fails = day % 3
        for reporter, count in (("google.com", 20), ("Outlook.com", 8), (HOSTILE, 3)):
            rows = [
                Row(source_ip="192.0.2.10", count=count, sigs=[Sig("example.com", ours)]),
                Row(
                    source_ip="192.0.2.11", count=fails, sigs=[Sig("example.com", ours, "fail")], dkim="fail"
                ),
                Row(source_ip="198.51.100.7", count=2, sigs=[Sig("example.com", "rogue")]),
            ]
            xml = report_xml(
                Spec(reporter=reporter, report_id=f"{reporter[:8]}-{day}", begin=begin, rows=rows)
            )
            store.add(parse_report_bytes(xml), source="test", now=FIXED_NOW)
    return store


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[str, SqliteReportStore]]:
    store = _fill(tmp_path / "reports.db")
    keys = key_store_with_one_key(tmp_path / "keys.db")
    server = make_server(PageContext(store, keys, lambda: FIXED_NOW), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", store
    finally:
        server.shutdown()
        server.server_close()
        store.close()
        keys.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1200,1400",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def test_the_page_shows_the_chart_the_stored_pass_rate_and_hostile_names_as_text(
    site: tuple[str, SqliteReportStore], browser: webdriver.Chrome, tmp_path: Path
) -> None:
    base, store = site
    browser.get(f"{base}/d/example.com")
    assert browser.title == "example.com: DMARC reports"  # no injected script changed it

    lines = browser.find_elements(By.CSS_SELECTOR, "svg#passchart polyline.series")
    assert {line.get_attribute("data-selector") for line in lines} == {"s2026", "rogue"}
    drawn = browser.execute_script(
        "const p = document.querySelector(\"polyline.series[data-selector='s2026']\");"
        "const b = p.getBBox(); return [b.width, b.height, p.points.numberOfItems];"
    )
    assert drawn[0] > 500 and drawn[1] > 0 and drawn[2] == 10  # ten days, drawn across the chart

    rows = [r for r in store.daily(domain="example.com") if r.selector == "s2026"]
    expected = f"{100 * sum(r.dkim_pass for r in rows) / sum(r.messages for r in rows):.1f}%"
    shown = browser.find_element(By.CSS_SELECTOR, "#selectors tr[data-selector='s2026'] td.passrate").text
    assert shown == expected

    receivers = [cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "#receivers td.receiver")]
    assert HOSTILE in receivers  # shown literally, as text
    assert browser.find_elements(By.CSS_SELECTOR, "img") == []
    assert browser.find_elements(By.CSS_SELECTOR, "body script") == []
    assert "rogue" in browser.find_element(By.ID, "failing").text  # a selector we do not own
    browser.save_screenshot(str(tmp_path / "reports-page.png"))
    if os.environ.get("MAILSEAL_SCREENSHOT"):
        shutil.copy(tmp_path / "reports-page.png", os.environ["MAILSEAL_SCREENSHOT"])

    link = next(
        row.find_element(By.CSS_SELECTOR, "td.receiver a")
        for row in browser.find_elements(By.CSS_SELECTOR, "#receivers tr")
        if row.find_elements(By.CSS_SELECTOR, "td")
        and row.find_elements(By.CSS_SELECTOR, "td")[0].text == "s2026"
        and row.find_element(By.CSS_SELECTOR, "td.receiver").text == HOSTILE
    )
    link.click()
    assert browser.title.startswith("records s2026._domainkey.example.com at")
    records = browser.find_elements(By.CSS_SELECTOR, "#records tr")
    assert len(records) == 1 + 10 + 10  # header, then a passing and a failing record for each of ten days
    assert HOSTILE in records[1].text
    assert browser.title != "pwned"
