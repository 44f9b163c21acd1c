"""The drawing page in a real browser (headless Debian chromium, Playwright): how fast the answer
comes after a finger lifts (touch emulation, CDP touch events) and after a mouse button is released,
that an answer for an older drawing is never shown (nor one for a drawing the server refused or could
not answer), that "save as" waits for the current drawing's own prediction, that /docs renders with
no network, how the page shows a number (boxes over the drawing) and "not sure" / "not a digit"
(canned answers from a Playwright route), a second finger, the keyboard's way to the photo chooser,
and a random digit that arrives after a drawing.
"""

from __future__ import annotations

import json
import os
import statistics
from itertools import pairwise
from urllib.parse import urlsplit

import pytest
from test_serve_browser import CHROMIUM, STROKES, browser, draw, label_becomes  # noqa: F401 (browser: a fixture)

from tegaki.predict import Predictor, bundled_model_path
from tegaki.serve.app import create_app, serving

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed at /usr/bin/chromium")]

PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 3, "has_touch": True, "is_mobile": True}

# in the page: the time of the last pointerup, and of the first moment after it when the answer
# shown is the current drawing's (#result-panel's data-seq equals #pad's data-version)
TIMER = """() => {
  const pad = document.getElementById('pad'), panel = document.getElementById('result-panel');
  window.__t = { up: null, shown: null };
  addEventListener('pointerup', () => { __t.up = performance.now(); __t.shown = null; }, true);
  new MutationObserver(() => {
    if (__t.up !== null && __t.shown === null && panel.dataset.seq === pad.dataset.version) __t.shown = performance.now();
  }).observe(panel, { attributes: true, attributeFilter: ['data-seq'] });
}"""
SETTLED = "document.getElementById('result-panel').dataset.seq === document.getElementById('pad').dataset.version"


@pytest.fixture(scope="module")
def site(mnist_dir, tmp_path_factory):
    if bundled_model_path() is None:
        pytest.fail("the bundled model (src/tegaki/model/) is missing")
    mnist = (mnist_dir / "t10k-images-idx3-ubyte.gz", mnist_dir / "t10k-labels-idx1-ubyte.gz")
    drawings = tmp_path_factory.mktemp("drawings")
    with serving(create_app(None, mnist=mnist, drawings=drawings)) as u:
        yield u, drawings


def open_page(browser, url, **context):
    ctx = browser.new_context(**context)
    pg = ctx.new_page()
    pg.errors = []
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.goto(url + "/")
    pg.wait_for_selector("#bars li >> nth=9")
    return pg


def close(pg):
    errors = pg.errors
    pg.context.close()
    assert not errors, errors  # no JavaScript errors


def touch_draw(pg, cdp, strokes) -> None:
    """Strokes (canvas pixels) drawn with a finger: CDP Input.dispatchTouchEvent, 4 moves a segment."""
    pg.locator("#pad").scroll_into_view_if_needed()
    box = pg.locator("#pad").bounding_box()
    s = box["width"] / 280

    def at(x, y):
        return [{"x": box["x"] + x * s, "y": box["y"] + y * s, "id": 1}]

    for stroke in strokes:
        cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": at(*stroke[0])})
        for (x0, y0), (x1, y1) in pairwise(stroke):
            for k in range(1, 5):
                t = k / 4
                cdp.send("Input.dispatchTouchEvent",
                         {"type": "touchMove", "touchPoints": at(x0 + t * (x1 - x0), y0 + t * (y1 - y0))})
        cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})


def answer_times(pg, draw_one, rounds: int = 3) -> list[float]:
    """ms from the last pointerup to the current drawing's answer shown, for digits 1, 7, 0 drawn
    `rounds` times; each answer must name the digit drawn."""
    pg.evaluate(TIMER)
    times = []
    for _ in range(rounds):
        for digit in (1, 7, 0):
            pg.click("#clear")
            label_becomes(pg, "")
            pg.wait_for_function(SETTLED)
            draw_one(STROKES[digit])
            pg.wait_for_function("window.__t.shown !== null", timeout=15_000)
            times.append(pg.evaluate("__t.shown - __t.up"))
            label_becomes(pg, str(digit))
    return times


def test_answer_time_after_touch_and_mouse(browser, site):
    """Printed: the median time from lifting the finger (or releasing the mouse button) to the
    answer shown; the goal is 100 ms (timings depend on the machine: indicative only)."""
    url, _ = site
    phone = open_page(browser, url, **PHONE)
    cdp = phone.context.new_cdp_session(phone)
    touch = answer_times(phone, lambda strokes: touch_draw(phone, cdp, strokes))
    sent = phone.evaluate("performance.getEntriesByType('resource').filter(e => e.name.includes('/api/predict')).length")
    close(phone)
    desk = open_page(browser, url, viewport={"width": 1000, "height": 900})
    mouse = answer_times(desk, lambda strokes: draw(desk, strokes))
    close(desk)
    load = os.getloadavg()[0]
    for name, t in (("touch (390x844 phone, CDP touch events)", touch), ("mouse (1000x900)", mouse)):
        print(f"\nlift -> answer shown, {name}: median {statistics.median(t):.0f} ms, "
              f"min {min(t):.0f}, max {max(t):.0f} over {len(t)} strokes ({os.cpu_count()} CPUs, load {load:.1f})")
    assert sent >= len(touch)
    assert statistics.median(touch) < 1000 and statistics.median(mouse) < 1000  # generous: the goal is 100


def test_a_stale_answer_is_dropped_and_save_waits(browser, site):
    """Draw a 1, add a bar (a 7) whose answer the route holds back, undo: the held answer (a 7)
    arrives late and is dropped; the page shows the 1, and "save as 1", clicked while the answer
    was held, is sent only after the current drawing's own answer and files the 1."""
    url, drawings = site
    pg = open_page(browser, url, viewport={"width": 1000, "height": 900})
    draw(pg, STROKES[1])
    label_becomes(pg, "1")
    pg.wait_for_function(SETTLED)
    held, late, order, holding = [], [], [], [True]
    pg.route("**/api/predict*", lambda route: held.append(route) if holding[0] else route.continue_())
    pg.on("response", lambda r: late.append(r.json()["label"]) if "/api/predict" in r.url and held else None)
    pg.on("request", lambda r: order.append(urlsplit(r.url).path) if "/api/" in r.url else None)
    draw(pg, [[(90, 60), (200, 60)]])  # the bar across the top
    while not held:
        pg.wait_for_timeout(20)
    pg.evaluate("""() => { window.__labels = [];
      new MutationObserver(() => __labels.push(document.getElementById('prediction-label').textContent))
        .observe(document.getElementById('prediction-label'), { childList: true, characterData: true, subtree: true }); }""")
    pg.click("#undo")
    pg.click("#save-buttons button >> nth=1")
    pg.wait_for_timeout(300)
    assert "/api/save" not in order  # save waits for the current drawing's answer
    holding[0] = False
    for route in held:
        route.continue_()
    pg.wait_for_function("document.querySelector('#status').textContent.includes('saved as 1')")
    assert late and late[0] == 7  # the held answer was a 7: a stale answer that had to be dropped
    assert pg.locator("#prediction-label").inner_text() == "1"
    assert "7" not in pg.evaluate("__labels"), pg.evaluate("__labels")
    assert pg.evaluate(SETTLED)
    assert order.index("/api/save") > max(i for i, p in enumerate(order) if p == "/api/predict")
    assert "reads it as 1" in pg.locator("#status").inner_text()
    saved = sorted((drawings / "1").glob("*.png"))
    assert len(saved) == 1 and Predictor.load(None).predict_image(saved[0]).label == 1  # the 1, no bar
    close(pg)


def test_docs_render_offline(browser, site):
    """/docs with every request to another host aborted: Swagger UI's files come from this server."""
    url, _ = site
    pg = browser.new_page()
    outside = []

    def only_local(route):
        if urlsplit(route.request.url).hostname in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    pg.route("**/*", only_local)
    pg.goto(url + "/docs")
    pg.wait_for_selector(".opblock-summary-path >> nth=5", timeout=20_000)
    paths = pg.locator(".opblock-summary-path").all_inner_texts()
    assert {"/api/predict", "/api/save", "/api/model", "/api/random"} <= {p.strip() for p in paths}, paths
    pg.locator(".opblock-summary-path").nth([p.strip() for p in paths].index("/api/predict")).click()
    pg.wait_for_selector(".parameters-col_name:has-text('features')", timeout=10_000)  # the operation opened
    assert outside == []
    pg.close()


def canned(number=None, status="digit", label=2, confidence=0.993):
    probs = [0.0] * 10
    probs[label] = confidence
    probs[(label + 1) % 10] = 1 - confidence
    return {"label": label, "name": str(label), "confidence": confidence, "status": status, "score": 1.0,
            "probabilities": probs, "top": [{"label": label, "name": str(label), "probability": confidence}],
            "input": [[0] * 28 for _ in range(28)], "info": {}, "number": number}


NUMBER = {"text": "2026", "note": None, "digits": [
    {"box": [x0, 40, x0 + 25, 100], "label": d, "name": str(d), "confidence": c, "status": s,
     "probabilities": [0.1] * 10}
    for x0, d, c, s in ((5, 2, 0.993, "digit"), (38, 0, 0.991, "digit"), (71, 2, 0.62, "not sure"), (104, 6, 0.97, "digit"))]}


def test_number_boxes_and_status(browser, site):
    """Canned answers (a route): a 4-digit number shows its text and a box per digit, scaled from the
    140x140 image the page sent to the 280x280 canvas; then "not sure" and "not a digit"."""
    url, _ = site
    pg = open_page(browser, url, viewport={"width": 1000, "height": 900})
    answers = []
    pg.route("**/api/predict*", lambda route: route.fulfill(status=200, content_type="application/json",
                                                            body=json.dumps(answers[-1])))
    answers.append(canned(NUMBER))
    draw(pg, [[(20, 120), (260, 120)]])
    pg.wait_for_function("document.getElementById('prediction-label').dataset.number === '2026'")
    pg.wait_for_function(SETTLED)
    assert pg.locator("#prediction-label").inner_text() == "2026"
    text = pg.locator("#prediction-text").inner_text()
    assert "4 digits" in text and "2 99.3%" in text and "2 62.0% (not sure)" in text
    boxes = json.loads(pg.locator("#boxes").get_attribute("data-boxes"))
    assert boxes == [[2 * x0, 80, 50, 120] for x0 in (5, 38, 71, 104)]  # canvas = 2 x image pixels
    assert pg.locator("#whole-note").is_visible()  # the bars beside a number are the whole image's, and say so
    # the boxes are drawn: the overlay's pixels are lit along each box's left edge, and not inside it
    lit = pg.evaluate("""(boxes) => { const g = document.getElementById('boxes').getContext('2d');
      return boxes.map(([x, y, w, h]) => [g.getImageData(x, y + h / 2, 1, 1).data[3],
                                          g.getImageData(x + w / 2, y + h / 2, 1, 1).data[3]]); }""", boxes)
    assert all(edge > 0 and inside == 0 for edge, inside in lit), lit

    for status, shown in (("not sure", "not sure"), ("not a digit", "not a digit"), ("digit", None)):
        answers.append(canned(None, status=status, label=3, confidence=0.41 if shown else 0.995))
        draw(pg, [[(140, 200), (141, 201)]])
        pg.wait_for_function(SETTLED)
        label_becomes(pg, "3")
        flag = pg.locator("#prediction-status")
        if shown:
            assert flag.is_visible() and flag.inner_text() == shown
            # the confidence is among the classes; the badge says the drawing is unlike a digit: no "41% sure"
            assert pg.locator("#prediction-text").inner_text() == "if it is a digit: 41.0% a 3"
        else:
            assert not flag.is_visible()
            assert pg.locator("#prediction-text").inner_text() == "99.5% sure"
        assert pg.locator("#boxes").get_attribute("data-boxes") == ""  # no number: no boxes
        assert not pg.locator("#whole-note").is_visible()
    close(pg)


def test_a_refused_or_unanswered_drawing_shows_no_answer(browser, site):
    """A drawing the server refuses (422) or cannot answer (down) has no answer: the previous drawing's
    digit, bars and boxes are cleared, not left on show beside the error."""
    url, _ = site
    pg = open_page(browser, url, viewport={"width": 1000, "height": 900})
    answers = [canned(NUMBER)]
    pg.route("**/api/predict*", lambda route: route.fulfill(status=200, content_type="application/json",
                                                            body=json.dumps(answers[-1])))
    draw(pg, STROKES[7])
    pg.wait_for_function("document.getElementById('prediction-label').dataset.number === '2026'")
    pg.unroute("**/api/predict*")
    refused = {"detail": "upload: not an image, or not one of the formats read here (PNG, JPEG); use a PNG or JPEG"}
    pg.route("**/api/predict*", lambda route: route.fulfill(status=422, content_type="application/json",
                                                            body=json.dumps(refused)))
    draw(pg, [[(140, 200), (141, 201)]])
    pg.wait_for_function(SETTLED)
    label_becomes(pg, "")
    assert pg.locator("#prediction-label").inner_text() == "?" and pg.locator("#prediction-text").inner_text() == "no answer"
    assert pg.locator("#boxes").get_attribute("data-boxes") == ""  # the number's boxes went with it
    assert pg.locator("#status").inner_text() == refused["detail"]
    assert pg.locator("#bars li >> nth=7 >> .pct").inner_text() == "–"
    pg.unroute("**/api/predict*")
    pg.click("#clear")
    draw(pg, STROKES[1])  # the server answers again
    label_becomes(pg, "1")
    pg.route("**/api/predict*", lambda route: route.abort())  # and now cannot be reached
    draw(pg, [[(60, 200), (61, 201)]])
    pg.wait_for_function(SETTLED)
    label_becomes(pg, "")
    assert "cannot reach the server" in pg.locator("#status").inner_text()
    close(pg)


def test_a_second_finger_does_not_spoil_the_stroke(browser, site):
    """A palm or a second finger that lands while a stroke is drawn is ignored: the stroke keeps its start and
    its end, and nothing joins it to the second finger."""
    url, _ = site
    pg = open_page(browser, url, **PHONE)
    cdp = pg.context.new_cdp_session(pg)
    pg.locator("#pad").scroll_into_view_if_needed()
    box = pg.locator("#pad").bounding_box()
    s = box["width"] / 280

    def points(*xy):
        return [{"x": box["x"] + x * s, "y": box["y"] + y * s, "id": i + 1} for i, (x, y) in enumerate(xy)]

    cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": points((80, 30))})
    for y in range(40, 150, 10):
        cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": points((80, y))})
    cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": points((80, 140), (220, 140))})
    for y in range(150, 260, 10):
        cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": points((80, y), (220, 140))})
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    pg.wait_for_function("state.strokes.length >= 1 && !state.current")
    strokes = pg.evaluate("state.strokes.map((s) => s.points)")
    assert len(strokes) == 1, strokes
    xs, ys = [p[0] for p in strokes[0]], [p[1] for p in strokes[0]]
    assert abs(ys[0] - 30) < 3 and abs(ys[-1] - 250) < 3 and max(xs) - min(xs) < 3  # one straight line, whole
    close(pg)


def test_the_photo_chooser_opens_from_the_keyboard(browser, site):
    """Tab reaches the photo input (hidden from sight, not from the keyboard) and Space opens the chooser."""
    url, _ = site
    pg = open_page(browser, url, viewport={"width": 1000, "height": 900})
    chosen = []
    pg.on("filechooser", lambda c: chosen.append(c))  # listening from the start: the browser hands the chooser to Playwright
    pg.wait_for_timeout(200)
    for _ in range(40):
        pg.keyboard.press("Tab")
        if pg.evaluate("document.activeElement.id") == "photo":
            break
    assert pg.evaluate("document.activeElement.id") == "photo"
    pg.keyboard.press("Space")
    for _ in range(100):
        if chosen:
            break
        pg.wait_for_timeout(50)
    assert chosen and not chosen[0].is_multiple() and chosen[0].element.get_attribute("id") == "photo"
    close(pg)


def test_a_random_digit_that_comes_after_a_drawing_is_dropped(browser, site):
    """The person asked for a random test digit, then drew before it came: the drawing stays, and is read."""
    url, _ = site
    pg = open_page(browser, url, viewport={"width": 1000, "height": 900})
    held = []
    pg.route("**/api/random*", lambda route: held.append(route))
    pg.click("#random")
    while not held:
        pg.wait_for_timeout(20)
    draw(pg, STROKES[7])
    label_becomes(pg, "7")
    held[0].continue_()
    pg.wait_for_function("document.querySelector('#status').textContent.includes('random digit dropped')")
    assert pg.evaluate("state.strokes.length") == 1 and pg.evaluate("state.base") is None
    assert pg.locator("#prediction-label").get_attribute("data-label") == "7"
    close(pg)

