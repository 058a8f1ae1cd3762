"""The operators' status page, in a real headless Chromium driven by selenium.

Chromium and its driver come from the Debian packages `chromium` and
`chromium-driver` (`.ci/run` installs them); selenium is pointed at that driver so it
never downloads one. A missing browser fails these tests rather than skipping them.

Set TICKER_SCREENSHOT_DIR (say, `var`) to keep a copy of the page's screenshot there
as `status-page.png`; without it the screenshot stays in pytest's tmp dir.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from kiteconnect import KiteConnect
from selenium import webdriver
from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
    TimeoutException,
)
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from werkzeug.serving import make_server

from tests.conftest import free_port
from ticker.config import Settings
from ticker.fanout import LastPrice
from ticker.subscriptions import Mode, Status, Subscription
from ticker.ticks import IST
from web import create_app
from web.status import Status as StatusAnswer

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOT_DIR_ENV = "TICKER_SCREENSHOT_DIR"
SCREENSHOT_NAME = "status-page.png"
# The page polls every 2 s; a subscription's first tick and backfill take a few more.
PAGE_TIMEOUT_S = 30.0
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1400,1100",
)
# The page rewrites its tables on every poll, so an element found may be gone a
# moment later; a wait simply looks again.
REDRAWN = (StaleElementReferenceException, NoSuchElementException)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    options = Options()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    # A profile of its own, removed with tmp_path: no state from another run.
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver: webdriver.Chrome, what: str, condition: Any) -> Any:
    """`condition(driver)` once truthy; on timeout, fail with what the page showed."""
    try:
        return WebDriverWait(driver, PAGE_TIMEOUT_S, poll_frequency=0.2,
                             ignored_exceptions=REDRAWN).until(condition)
    except TimeoutException:
        shown = driver.find_element(By.TAG_NAME, "body").text
    # Outside the handler, so the failure is the page's text, not selenium's trace.
    pytest.fail(f"the status page never showed {what} within {PAGE_TIMEOUT_S}s; "
                f"it showed:\n{shown}")


def cell(driver: webdriver.Chrome, token: int, css_class: str) -> str:
    row = driver.find_element(By.CSS_SELECTOR,
                              f'#subscriptions tr[data-token="{token}"]')
    return str(row.find_element(By.CSS_SELECTOR, f"td.{css_class}").text)


def quiet_tokens(stack, count: int) -> list[int]:
    """Option tokens no other test of the session uses: the chain's last ones."""
    kite = KiteConnect("simkey_a", access_token="simtoken_a", root=stack.sim_rest)
    return [int(row["instrument_token"]) for row in kite.instruments("NFO")[-count:]]


def write_headers(stack) -> dict[str, str]:
    key = stack.env.get("TICKER_API_KEY")
    return {"X-API-Key": key} if key else {}


def keep_screenshot(driver: webdriver.Chrome, tmp_path: Path) -> Path:
    """Save the page's screenshot under tmp_path; copy it where the env var says."""
    shot = tmp_path / SCREENSHOT_NAME
    assert driver.save_screenshot(str(shot)), "Chromium took no screenshot"
    assert shot.read_bytes().startswith(b"\x89PNG"), "the screenshot is not a PNG"
    target_dir = os.environ.get(SCREENSHOT_DIR_ENV)
    if target_dir:
        Path(target_dir).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, Path(target_dir) / SCREENSHOT_NAME)
    return shot


def test_the_page_shows_both_accounts_live_prices_backfill_and_events(
        stack, browser, tmp_path):
    # A few tokens, so that placement spreads them over both accounts.
    tokens = quiet_tokens(stack, 3)
    accounts = {a["account_id"] for a in
                requests.get(f"{stack.api}/accounts", timeout=10).json()["accounts"]}
    symbols = {}
    try:
        for token in tokens:
            created = requests.post(
                f"{stack.api}/subscriptions", headers=write_headers(stack),
                json={"instrument_token": token, "requested_mode": "FULL"}, timeout=10)
            assert created.status_code in (200, 202), created.text
            symbols[token] = created.json()["tradingsymbol"]
        watched = tokens[0]

        browser.get(f"{stack.api}/")

        wait_for(browser, "a price for every token", lambda d: all(
            cell(d, token, "price") not in ("", "–") for token in tokens))
        first_price = cell(browser, watched, "price")
        wait_for(browser, f"the price of {watched} change from {first_price}",
                 lambda d: cell(d, watched, "price") != first_price)
        wait_for(browser, "a completed backfill for every token", lambda d: all(
            d.find_elements(By.CSS_SELECTOR,
                            f'tr[data-token="{t}"] td.backfill[data-state="completed"]')
            for t in tokens))
        created_events = '#events li[data-event-type="subscription_created"]'
        wait_for(browser, f"a subscription_created event for {watched}", lambda d: [
            e for e in d.find_elements(By.CSS_SELECTOR, created_events)
            if str(watched) in e.text])

        shown = {e.get_attribute("data-account-id")
                 for e in browser.find_elements(By.CSS_SELECTOR, "#accounts .account")}
        assert shown == accounts and len(accounts) == 2
        assert {t: cell(browser, t, "symbol") for t in tokens} == symbols
        assert float(cell(browser, watched, "tick-age").split()[0]) < 5
        assert browser.find_element(By.ID, "health").text == "healthy"
        summary = browser.find_element(By.ID, "backfill-summary")
        assert summary.get_attribute("data-worker-state") == "ok"
        assert "Backfill workers: 1." in summary.text
        keep_screenshot(browser, tmp_path)
        # What the page polled matches the shape /openapi.json documents for it.
        polled = requests.get(f"{stack.api}/status.json", timeout=10).json()
        StatusAnswer.model_validate(polled)
        assert {s["instrument_token"] for s in polled["subscriptions"]} >= set(tokens)
    finally:
        for token in symbols:
            requests.delete(f"{stack.api}/subscriptions/{token}",
                            headers=write_headers(stack), timeout=10)


MARKUP = '<img src=x onerror="document.title=\'pwned\'">'


class MarkupService:
    """A service whose every string is markup, to show the page renders it as text."""

    def __init__(self) -> None:
        now = datetime.now(IST)
        self.subscription = Subscription(
            instrument_token=42, tradingsymbol=MARKUP, exchange=MARKUP, segment=MARKUP,
            account_id=MARKUP, requested_mode=Mode.FULL, applied_mode=Mode.FULL,
            status=Status.PENDING, version=1, task_id=None, created_at=now,
            updated_at=now, status_reason=MARKUP,
        )

    def health(self) -> dict[str, Any]:
        return {"status": "unhealthy", "database": MARKUP, "redis": "ok",
                "failing": [MARKUP], "workers": {}}

    def list(self, account_id, status) -> list[Subscription]:
        return [self.subscription]

    def last_prices(self, tokens) -> dict[int, LastPrice]:
        return {42: LastPrice(1.5, 0.0)}

    def recent_events(self, count: int) -> list[dict[str, Any]]:
        return [{"stream_id": "1-0", "event_id": MARKUP, "event_type": MARKUP,
                 "instrument_token": 42, "metadata": {"tradingsymbol": MARKUP},
                 "timestamp": 1.0, "sequence": 1}]

    def accounts(self) -> list[dict[str, Any]]:
        return [{"account_id": MARKUP, "capacity": 10, "used": 1, "free": 9,
                 "max_instruments_per_connection": 10, "max_connections": 1,
                 "worker_alive": True, "socket_state": MARKUP,
                 "connections": [{"index": 0, "phase": MARKUP, "tokens": 1,
                                  "last_frame_age_s": 0.1, "open": True}]}]

    def metrics_snapshot(self) -> None:
        return None


@pytest.fixture
def markup_page() -> Iterator[str]:
    """The web app with MarkupService, served on a free port from a thread."""
    server = make_server("127.0.0.1", free_port(),
                         create_app(Settings(), service=MarkupService()), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        thread.join(5)


def test_markup_in_a_tradingsymbol_is_shown_as_text_and_never_run(browser, markup_page):
    browser.get(markup_page)

    wait_for(browser, "the subscription row",
             lambda d: d.find_element(By.CSS_SELECTOR, 'tr[data-token="42"]'))

    assert cell(browser, 42, "symbol") == MARKUP
    assert MARKUP in browser.find_element(By.ID, "accounts").text
    assert MARKUP in browser.find_element(By.ID, "events").text
    assert browser.find_elements(By.TAG_NAME, "img") == []
    assert browser.title != "pwned"
