"""The draw-a-digit page in a real browser: Debian's headless Chromium, driven by Selenium,
draws with pointer events on the canvas of a real mnist-serve."""

import base64
import json
import os
from pathlib import Path

import numpy as np
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.actions import interaction
from selenium.webdriver.common.actions.action_builder import ActionBuilder
from selenium.webdriver.common.actions.pointer_input import PointerInput
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from support import fetch, serving

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
SIDE = 280  # the canvas, in CSS pixels
ONE = [(150, 40), (140, 240)]
SEVEN = [(60, 50), (215, 50), (120, 245)]


@pytest.fixture
def browser(monkeypatch):
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("the browser tests need Debian's Chromium: apt-get install -y chromium "
                    "chromium-driver", pytrace=False)
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must never download a browser
    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--window-size=760,640", "--force-device-scale-factor=1"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def draw(driver, points, kind=interaction.POINTER_MOUSE, steps=12):
    """One stroke through `points` (canvas pixels), as a mouse or a finger would draw it."""
    canvas = driver.find_element(By.ID, "canvas")
    actions = ActionBuilder(driver, mouse=PointerInput(kind, kind))
    at = lambda x, y: actions.pointer_action.move_to(  # noqa: E731 - offsets from the centre
        canvas, round(x - SIDE / 2), round(y - SIDE / 2))
    at(*points[0])
    actions.pointer_action.pointer_down()
    for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False):
        for i in range(1, steps + 1):
            at(x0 + (x1 - x0) * i / steps, y0 + (y1 - y0) * i / steps)
    actions.pointer_action.pointer_up()
    actions.perform()


def shown_label(driver) -> str:
    """The class the page shows, once its answer has settled on the finished drawing."""
    def settled(driver):
        label = driver.find_element(By.ID, "label").get_attribute("data-label")
        idle = driver.execute_script("return !busy && !again")
        return label if label is not None and idle else False
    return WebDriverWait(driver, 30).until(settled)


def canvas_png(driver) -> bytes:
    url = driver.execute_script("return canvas.toDataURL('image/png')")
    return base64.b64decode(url.split(",", 1)[1])


def api_label(url: str, png: bytes, token: str | None = None) -> int:
    headers = {"Content-Type": "image/png"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    status, _, body = fetch(url + "v1/predict", "POST", png, headers)
    assert status == 200
    return json.loads(body)["predictions"][0]["label"]


def test_drawing_a_digit_with_mouse_or_finger_shows_what_the_model_predicts(
        model, browser, tmp_path):
    with serving(model) as (url, _, _):
        browser.get(url)
        WebDriverWait(browser, 30).until(
            lambda d: "784-128-10" in d.find_element(By.ID, "model").text)

        draw(browser, ONE)
        assert shown_label(browser) == "1"
        assert api_label(url, canvas_png(browser)) == 1

        browser.find_element(By.ID, "clear").click()
        assert browser.find_element(By.ID, "label").get_attribute("data-label") is None
        for start, end in zip(SEVEN, SEVEN[1:], strict=False):
            draw(browser, [start, end], interaction.POINTER_TOUCH)
        assert shown_label(browser) == "7"
        assert api_label(url, canvas_png(browser)) == 7
        bars = browser.find_elements(By.CSS_SELECTOR, "#bars .bar")
        assert [bar.get_attribute("data-label") for bar in bars][:1] == ["7"]
        assert len(bars) == 3
        for bar in bars:  # each bar is as long as its probability
            percent = float(bar.find_element(By.CSS_SELECTOR, ".p").text.rstrip("%"))
            fill = bar.find_element(By.CSS_SELECTOR, ".fill").size["width"]
            track = bar.find_element(By.CSS_SELECTOR, ".track").size["width"]
            assert track > 0 and abs(fill / track - percent / 100) < 0.02

        browser.execute_script("window.scrollTo(0, 0)")
        folder = Path(os.environ.get("MNIST_GLUON_SCREENSHOTS", tmp_path))
        assert browser.save_screenshot(str(folder / "serve-page.png"))


@pytest.mark.parametrize("kind", ["mlp", "lenet"])
def test_the_page_shows_what_the_prediction_looked_at_as_the_api_explains_it(
        kind, model, lenet_model, browser):
    from mnist_gluon.explain.heatmap import overlay

    with serving(model if kind == "mlp" else lenet_model) as (url, _, _):
        browser.get(url)
        WebDriverWait(browser, 30).until(lambda d: (
            "784-128-10 MLP" if kind == "mlp" else "LeNet 8-16 channels, 64 hidden")
            in d.find_element(By.ID, "model").text)
        figure = browser.find_element(By.ID, "explained")
        assert not figure.is_displayed()
        draw(browser, SEVEN)
        label = shown_label(browser)
        assert figure.is_displayed() and figure.get_attribute("data-target") == label
        assert f"raised {label}" in figure.text.replace("\n", " ")
        shown = np.array(browser.execute_script(
            "return Array.from(explanation.getImageData(0, 0, 28, 28).data)"), np.int32)
        status, _, body = fetch(url + "v1/explain", "POST", canvas_png(browser),
                                {"Content-Type": "image/png"})
        answer = json.loads(body)["explanations"][0]
        assert status == 200 and str(answer["label"]) == label
        expected = overlay(np.array(answer["image"]), np.array(answer["map"], np.float32))
        assert np.abs(shown.reshape(28, 28, 4)[..., :3] - expected).max() <= 1
        reds = (expected[..., 0] > 150) & (expected[..., 1] < 80)
        assert reds.sum() > 10  # the map has something to show

        browser.find_element(By.ID, "clear").click()
        assert not figure.is_displayed()


def test_the_page_asks_for_the_token_of_a_guarded_server(model, browser):
    with serving(model, "--token", "page-token") as (url, _, _):
        browser.get(url)
        form = browser.find_element(By.ID, "token-form")
        WebDriverWait(browser, 30).until(lambda d: form.is_displayed())
        assert "token" in browser.find_element(By.ID, "status").text
        browser.find_element(By.ID, "token").send_keys("page-token")
        form.submit()
        draw(browser, ONE)
        assert shown_label(browser) == "1"
        assert not form.is_displayed()
