"""The drawing page in a real browser: headless Debian chromium driven by Playwright.

The test draws digits with mouse strokes on the canvas, reads the predicted label from the page,
uses undo, clear, the steps and feature-map views and the random test digit, checks the layout on
a phone-sized screen, and saves screenshots (docs/images/page_screenshot.png is one of them).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from tegaki.predict import Predictor, bundled_model_path
from tegaki.serve.app import create_app, serving

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed at /usr/bin/chromium")]

# strokes in canvas pixels (the canvas is 280 x 280 whatever its size on screen)
STROKES = {
    1: [[(150, 40), (146, 140), (138, 240)]],
    7: [[(80, 50), (200, 50), (160, 145), (120, 240)]],
    0: [[(140 + 60 * math.sin(t), 140 - 95 * math.cos(t)) for t in np.linspace(0, 2 * math.pi, 30)]],
    4: [[(170, 40), (80, 170), (215, 170)], [(170, 40), (170, 250)]],
}


@pytest.fixture(scope="module")
def url(mnist_dir, tmp_path_factory):
    if bundled_model_path() is None:
        pytest.fail("the bundled model (src/tegaki/model/) is missing")
    mnist = (mnist_dir / "t10k-images-idx3-ubyte.gz", mnist_dir / "t10k-labels-idx1-ubyte.gz")
    app = create_app(None, mnist=mnist, drawings=tmp_path_factory.mktemp("drawings"))
    with serving(app) as u:
        yield u


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, url):
    pg = browser.new_page(viewport={"width": 1000, "height": 900})
    errors = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(url + "/")
    pg.wait_for_selector("#bars li >> nth=9")
    yield pg
    pg.close()
    assert not errors, errors  # no JavaScript errors


def draw(page, strokes) -> None:
    page.locator("#pad").scroll_into_view_if_needed()
    box = page.locator("#pad").bounding_box()
    s = box["width"] / 280
    for stroke in strokes:
        x, y = stroke[0]
        page.mouse.move(box["x"] + x * s, box["y"] + y * s)
        page.mouse.down()
        for x, y in stroke[1:]:
            page.mouse.move(box["x"] + x * s, box["y"] + y * s, steps=4)
        page.mouse.up()


def label_becomes(page, value: str, timeout: float = 15_000) -> None:
    page.wait_for_function(f"document.querySelector('#prediction-label').dataset.label === '{value}'",
                           timeout=timeout)


@pytest.mark.parametrize("digit", sorted(STROKES))
def test_drawn_digit_is_named(page, digit):
    draw(page, STROKES[digit])
    label_becomes(page, str(digit))
    assert page.locator("#prediction-label").inner_text() == str(digit)
    assert page.locator("#bars li.top").get_attribute("data-label") == str(digit)
    assert "% sure" in page.locator("#prediction-text").inner_text()
    # "what the network sees" got the 28x28 input: some of its pixels are lit
    lit = page.evaluate("""() => { const d = document.getElementById('seen').getContext('2d')
                                     .getImageData(0, 0, 28, 28).data; let n = 0;
                                   for (let i = 0; i < d.length; i += 4) n += d[i] > 128; return n; }""")
    assert 15 < lit < 400


def test_undo_clear_steps_features_and_screenshot(page, tmp_path):
    draw(page, STROKES[1])
    label_becomes(page, "1")
    draw(page, [[(90, 60), (200, 60)]])  # a bar across the top: now it reads as a 7
    label_becomes(page, "7")
    page.click("#undo")
    label_becomes(page, "1")
    page.click("#clear")
    label_becomes(page, "")
    assert page.locator("#prediction-label").inner_text() == "?"
    page.check("#show-steps")
    page.check("#show-features")
    sent = []  # with feature maps on, each drawing is still one request, to /api/predict
    page.on("request", lambda req: sent.append(req.url) if "/api/" in req.url else None)
    draw(page, STROKES[7])
    label_becomes(page, "7")
    page.wait_for_selector("#steps-panel:not([hidden]) figure >> nth=5")
    page.wait_for_selector("#features-panel:not([hidden]) figure >> nth=0")
    assert sent and all("/api/predict?" in u and "features=2" in u and "steps=true" in u for u in sent), sent
    convs = Predictor.load(None).conv_blocks()
    assert page.locator("#features figure").count() == len(convs) == 2
    assert convs[0][0] in page.locator("#features").inner_text()
    assert "stroke" in page.locator("#steps-info").inner_text()
    shot = tmp_path / "page_screenshot.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000
    print(f"screenshot: {shot}")


def test_random_test_digit_and_save(page):
    page.click("#random")
    page.wait_for_function("document.querySelector('#truth').textContent.includes('true label')")
    truth = page.locator("#truth").inner_text()
    true_label = truth.split("true label ")[1][0]
    if "✓" in truth:  # the prediction shown is the test digit's
        label_becomes(page, true_label)
    page.click("#clear")
    draw(page, STROKES[0])
    label_becomes(page, "0")
    page.click("#save-buttons button >> nth=0")
    page.wait_for_function("document.querySelector('#status').textContent.includes('saved as 0')")


def test_readable_on_a_phone(browser, url, tmp_path):
    pg = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2, has_touch=True,
                          is_mobile=True)
    pg.goto(url + "/")
    pg.wait_for_selector("#bars li >> nth=9")
    assert pg.evaluate("document.documentElement.scrollWidth") <= 390  # nothing sticks out sideways
    box = pg.locator("#pad").bounding_box()
    assert 300 <= box["width"] <= 390 and abs(box["width"] - box["height"]) < 2
    draw(pg, STROKES[7])  # mouse events on a touch page still arrive as pointer events
    label_becomes(pg, "7")
    pg.screenshot(path=str(tmp_path / "page_phone.png"), full_page=True)
    pg.close()


def test_a_photo_of_a_digit(page, mnist, tmp_path):
    """The "photo…" button (a file chooser; on a phone, the camera) sends the file itself."""
    from PIL import Image, ImageFilter

    digit = mnist.test_images[0]  # a 7
    ink = np.asarray(Image.fromarray(digit).resize((200, 200), Image.BICUBIC), np.float32) / 255
    sheet = np.full((420, 320, 3), (235, 228, 210), np.float32)
    sheet[150:350, 40:240] = sheet[150:350, 40:240] * (1 - ink[..., None]) + np.array([30, 30, 80]) * ink[..., None]
    photo = tmp_path / "digit.jpg"
    Image.fromarray(sheet.astype(np.uint8)).filter(ImageFilter.GaussianBlur(1.2)).save(photo, quality=80)
    page.set_input_files("#photo", str(photo))
    label_becomes(page, str(mnist.test_labels[0]))
    assert "digit.jpg" in page.locator("#truth").inner_text()
    page.click("#clear")
    label_becomes(page, "")
