"""The review queue in a real headless Chromium (Debian's ``chromium`` + ``chromium-driver``, driven
by selenium): click a verdict, restart the server, reload, and find the verdict kept."""

from __future__ import annotations

import json
import shutil

import pytest
from test_review_fakes import make_suite, serving

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
selenium = pytest.importorskip("selenium", reason="pip install selenium (realgap[dev])")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver (scripts/setup.sh installs them as root)")

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1300,1000")


@pytest.fixture()
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")  # fresh profile: no state carried over
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)  # explicit driver: nothing is downloaded
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver, condition, timeout: float = 20):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition)


def _open_episode(driver, url: str, episode: int):
    from selenium.webdriver.common.by import By

    driver.get(url + "/")
    row = _wait(driver, lambda d: d.find_element(By.ID, f"item-{episode}"))
    row.click()
    _wait(driver, lambda d: f"episode {episode} " in d.find_element(By.ID, "title").text)
    _wait(driver, lambda d: d.find_element(By.ID, "save-status").text != "saving…")


def _js_errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def test_a_clicked_verdict_is_kept_across_a_server_restart_and_a_reload(tmp_path, browser):
    from selenium.webdriver.common.by import By

    out = make_suite(tmp_path / "suite", n=8, flagged=(1, 3, 4))  # 4 is a success: no frames kept
    note = "knocked the vial over at the alarm"
    with serving(out, n_unflagged=2) as (app, url):
        _open_episode(browser, url, 3)
        assert "place the red block in the yellow rack #3" in browser.find_element(By.ID, "instruction").text
        assert "alarm at step" in browser.find_element(By.ID, "outcome").text
        # the frame shown is the store's frame of the step on the slider (the alarm step)
        src = browser.find_element(By.ID, "frame").get_attribute("src")
        assert src.endswith(f"/api/episode/3/frame/{app.suite.scored[3]['alarm_step']}.png")
        assert "alarm" in browser.find_element(By.ID, "frame").get_attribute("class")
        browser.find_element(By.ID, "note").send_keys(note)
        browser.find_element(By.ID, "verdict-real_failure").click()
        _wait(browser, lambda d: d.find_element(By.ID, "save-status").text.startswith("saved"))
        assert "1/1" in browser.find_element(By.ID, "precision").text
        assert browser.find_element(By.CSS_SELECTOR, "#item-3 .verdict-cell").text == "real failure"
        on_disk = json.loads((out / "review" / "verdicts.json").read_text())["verdicts"]
        assert on_disk["3"]["verdict"] == "real_failure" and on_disk["3"]["note"] == note
        # a keyboard verdict on the next item ("j" moves, "2" = benign)
        browser.find_element(By.TAG_NAME, "body").send_keys("j")
        _wait(browser, lambda d: "episode 1 " in d.find_element(By.ID, "title").text)
        browser.find_element(By.TAG_NAME, "body").send_keys("2")
        _wait(browser, lambda d: d.find_element(By.ID, "save-status").text.startswith("saved"))
        assert _js_errors(browser) == []

    # the server is gone; a new one on the same folder (another port), and a fresh page load
    with serving(out, n_unflagged=2) as (_, url2):
        _open_episode(browser, url2, 3)
        button = browser.find_element(By.ID, "verdict-real_failure")
        assert "selected" in button.get_attribute("class") and button.get_attribute("aria-pressed") == "true"
        assert "selected" not in browser.find_element(By.ID, "verdict-benign").get_attribute("class")
        assert browser.find_element(By.ID, "note").get_attribute("value") == note
        assert "1/2" in browser.find_element(By.ID, "precision").text  # 3 real failure, 1 benign
        browser.refresh()  # a plain reload of the same page (#episode=3) also comes back with it
        _wait(browser, lambda d: "episode 3 " in d.find_element(By.ID, "title").text)
        _wait(browser, lambda d: "selected" in d.find_element(By.ID, "verdict-real_failure").get_attribute("class"))
        # an episode without frames says so instead of showing a blank image
        _open_episode(browser, url2, 4)
        assert browser.find_element(By.ID, "no-frames").is_displayed()
        assert _js_errors(browser) == []

