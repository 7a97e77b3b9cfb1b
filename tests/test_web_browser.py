"""The dashboard in a real headless Chromium (Debian's `chromium` + `chromium-driver`, driven
by selenium) against a real daemon subprocess with `[web] listen` on.

One daemon and one browser for the module (starting either costs seconds); the tests run in
file order and each leaves the daemon NORMAL. Every wait has a deadline (WebDriverWait
polls a condition in the page or the daemon). Screenshots go to the pytest tmp directory
(`web-screenshots/`), its path printed. Chromium missing is a failure, not a skip: CI
installs it (.ci/run).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.daemon_fixture import DaemonProcess
from tests.ports import free_port
from transport.control_client import ControlClient

TOKEN = "browser-test-token-4f1c"
WAIT_S = 20.0


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRADELOOM_WEB_TOKEN", TOKEN)  # the child's environment
        process = DaemonProcess(tmp_path_factory.mktemp("web-daemon"), config={
            "web": {"listen": f"127.0.0.1:{free_port()}"},
            "emergency": {"limits": [{"name": "daily_loss", "kind": "daily_loss",
                                      "threshold": 100.0, "auto_halt": False}]},
        })
        process.start()
        yield process
        process.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("web-screenshots")
    print(f"screenshots: {directory}")
    return directory


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        pytest.fail("the browser tests need Debian's chromium and chromium-driver "
                    "(apt-get install chromium chromium-driver; .ci/run installs them)",
                    pytrace=False)
    options = Options()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def url(daemon: DaemonProcess) -> str:
    return f"http://{daemon.config['web']['listen']}/"


def wait(driver: WebDriver, condition: Callable[[WebDriver], Any], what: str) -> Any:
    return WebDriverWait(driver, WAIT_S, poll_frequency=0.05).until(condition, message=what)


def page_stats(driver: WebDriver) -> dict[str, Any]:
    stats: dict[str, Any] = driver.execute_script("return window.tradeloomStats || {}")
    return stats


@pytest.fixture(scope="module")
def page(browser: WebDriver, daemon: DaemonProcess) -> WebDriver:
    """The dashboard, opened with the token in the URL fragment, connected."""
    browser.get(url(daemon) + f"#token={TOKEN}")
    wait(browser, lambda d: page_stats(d).get("connected"), "the page connects")
    assert "token" not in browser.current_url  # the fragment is wiped once kept
    return browser


def test_page_loads_with_the_token_and_shows_running_executions(
        page: WebDriver, daemon: DaemonProcess, screenshots: Path) -> None:
    with daemon.client() as control:
        running = control.submit("slow", {"sleep_s": 60})["execution_id"]
        control.submit("fast")
    row = f'#executions tr[data-id="{running}"]'
    wait(page, lambda d: d.find_elements(By.CSS_SELECTOR, f'{row}[data-status="running"]'),
         "the running execution is listed as running")
    page.find_element(By.CSS_SELECTOR, row).click()  # its detail: nodes, attempts, ...
    wait(page, lambda d: '"nodes"' in d.find_element(By.ID, "detail-body").text,
         "the execution's detail shows its nodes")
    assert page.find_element(By.ID, "banner").get_attribute("data-state") == "NORMAL"
    page.save_screenshot(str(screenshots / "1-running.png"))
    with daemon.client() as control:
        control.cancel(running)


def test_a_risk_update_moves_its_bar(page: WebDriver, daemon: DaemonProcess,
                                     screenshots: Path) -> None:
    def utilization(d: WebDriver) -> float | None:
        bars = d.find_elements(By.CSS_SELECTOR, '.limit[data-name="daily_loss"]')
        return float(bars[0].get_attribute("data-utilization") or 0) if bars else None

    with daemon.client() as control:
        control.risk_update("daily_loss", value=30.0)
        wait(page, lambda d: utilization(d) == pytest.approx(0.3), "the bar at 30 %")
        control.risk_update("daily_loss", value=90.0)  # past warn_at (0.8)
    wait(page, lambda d: utilization(d) == pytest.approx(0.9), "the bar moves to 90 %")
    fill = page.find_element(By.CSS_SELECTOR, '.limit[data-name="daily_loss"] .fill')
    assert "warn" in (fill.get_attribute("class") or "")
    assert fill.value_of_css_property("width") != "0px"
    page.save_screenshot(str(screenshots / "2-risk.png"))
    text = '.limit[data-name="daily_loss"] .v'
    with daemon.client() as control:
        # A day in profit (a negative loss): the text says so as `status` does; the bar
        # is empty (it read "(0%)" too).
        control.risk_update("daily_loss", value=-30.0)
        wait(page, lambda d: "(-30%)" in d.find_element(By.CSS_SELECTOR, text).text,
             "the text at -30 %")
        assert utilization(page) == 0.0
        control.risk_update("daily_loss", value=0.0)


def last_change(control: ControlClient) -> tuple[str, str] | None:
    """(state, origin) of the last committed emergency_state_changed, if any."""
    changes = [e for e in control.replay(since_seq=1, limit=10_000)["events"]
               if e["type"] == "emergency_state_changed"]
    return (changes[-1]["state"], changes[-1]["origin"]) if changes else None


def test_halt_clicked_and_confirmed_halts_the_daemon(page: WebDriver, daemon: DaemonProcess,
                                                     screenshots: Path) -> None:
    page.find_element(By.ID, "btn-halt").click()
    wait(page, lambda d: d.find_element(By.ID, "confirm").is_displayed(), "a confirmation")
    with daemon.client() as control:
        assert control.status()["state"] == "NORMAL"  # nothing happens before confirming
    page.save_screenshot(str(screenshots / "3-confirm.png"))
    page.find_element(By.ID, "confirm-ok").click()
    try:
        with daemon.client() as control:
            # `status` shows HALT as soon as it holds (in memory, before its commit); the
            # event is in `replay` once committed: wait for that, not for the status.
            wait(page, lambda d: last_change(control) == ("HALT", "web"),
                 "the HALT from the page, committed")
        wait(page, lambda d: d.find_element(By.ID, "banner").get_attribute("data-state")
             == "HALT", "the banner turns HALT")
        banner = page.find_element(By.ID, "banner")
        assert banner.value_of_css_property("background-color") == "rgba(192, 57, 43, 1)"
        page.save_screenshot(str(screenshots / "4-halted.png"))
    finally:  # the next tests need the daemon running, whatever happened here
        with daemon.client() as control:
            control.resume("browser test done")
    wait(page, lambda d: d.find_element(By.ID, "banner").get_attribute("data-state")
         == "NORMAL", "the banner turns back")


def test_after_a_daemon_restart_the_page_resumes_with_no_gap(
        page: WebDriver, daemon: DaemonProcess, screenshots: Path) -> None:
    before = page_stats(page)
    assert before["gaps"] == 0 and before["duplicates"] == 0
    assert daemon.terminate() == 0
    wait(page, lambda d: not page_stats(d)["connected"], "the page sees the daemon go")
    daemon.start()
    with daemon.client() as control:
        for _ in range(3):
            control.submit("fast")
        wait(page, lambda d: page_stats(d)["connects"] > before["connects"]
             and page_stats(d)["lastSeq"] >= control.status()["last_seq"],
             "the page reconnects and catches up")
    after = page_stats(page)
    assert after["gaps"] == 0 and after["duplicates"] == 0
    # Every seq from the first the page saw to the last is accounted for.
    assert after["received"] == after["lastSeq"] - before["lastSeq"] + before["received"]
    page.save_screenshot(str(screenshots / "5-reconnected.png"))


def test_after_the_journal_is_replaced_the_page_follows_the_new_log(
        page: WebDriver, daemon: DaemonProcess, screenshots: Path) -> None:
    """A daemon back on a journal that ends before where the page left off (a backup
    restored in place; here a fresh data_dir) numbers on from its own last seq: the page
    follows from there, a line in its log saying so (it asked for a seq past the log's end
    and waited, "live", for events it would never get)."""
    before = page_stats(page)
    assert daemon.terminate() == 0
    wait(page, lambda d: not page_stats(d)["connected"], "the page sees the daemon go")
    daemon.data_dir.rename(daemon.data_dir.with_name("data-replaced"))
    daemon.start()
    with daemon.client() as control:
        running = control.submit("slow", {"sleep_s": 60})["execution_id"]
        wait(page, lambda d: page_stats(d)["resyncs"] == before.get("resyncs", 0) + 1
             and page_stats(d)["lastSeq"] >= control.status()["last_seq"],
             "the page follows the replaced log")
        assert control.status()["last_seq"] < before["lastSeq"]  # seqs the page had, reused
        wait(page, lambda d: d.find_elements(
            By.CSS_SELECTOR, f'#executions tr[data-id="{running}"][data-status="running"]'),
            "the new execution is listed")
        control.cancel(running)
    assert "its journal was replaced" in page.find_element(By.ID, "log").text
    page.save_screenshot(str(screenshots / "6-journal-replaced.png"))


def test_a_token_with_a_lone_percent_gets_the_form_not_a_dead_page(
        browser: WebDriver, daemon: DaemonProcess) -> None:
    """`decodeURIComponent` threw on "%ZZ" at the page's start: no form, no connection,
    the token left in the address bar. It is taken as written (and refused here)."""
    browser.execute_script("sessionStorage.clear()")
    browser.get("about:blank")
    browser.get(url(daemon) + "#token=wrong%ZZ")
    wait(browser, lambda d: d.find_element(By.ID, "token-form").is_displayed(),
         "the refused token asks for another")
    assert "token" not in browser.current_url


def test_token_form_and_a_wrong_token(browser: WebDriver, daemon: DaemonProcess) -> None:
    browser.execute_script("sessionStorage.clear()")
    browser.get("about:blank")  # else only the fragment changes: no reload
    browser.get(url(daemon) + "#token=wrong")
    wait(browser, lambda d: d.find_element(By.ID, "token-form").is_displayed(),
         "a refused token asks for another")
    assert "refused" in browser.find_element(By.ID, "token-error").text
    browser.find_element(By.ID, "token-input").send_keys(TOKEN)
    browser.find_element(By.CSS_SELECTOR, "#token-form button").click()
    wait(browser, lambda d: page_stats(d).get("connected"), "the right token connects")
