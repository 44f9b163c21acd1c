"""`tegaki report`: one self-contained HTML file that opens offline in a real browser."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def report(lenet_run, tmp_path_factory, mnist_dir):
    """The report of the 1-epoch LeNet, built by the command a user runs."""
    import os

    from tegaki.cli import main

    out = tmp_path_factory.mktemp("report") / "report.html"
    old = os.environ.get("TEGAKI_DATA_DIR")
    os.environ["TEGAKI_DATA_DIR"] = str(mnist_dir.parent)
    try:
        code = main(["report", str(lenet_run), "--out", str(out), "--tsne-sample", "300", "--mistakes", "12",
                     "--index", "5"])
    finally:
        if old is None:
            os.environ.pop("TEGAKI_DATA_DIR", None)
        else:
            os.environ["TEGAKI_DATA_DIR"] = old
    assert code == 0
    return out


def test_report_holds_every_section_and_no_outside_reference(report):
    text = report.read_text()
    for anchor in ("summary", "network", "curves", "accuracy", "confusion", "mistakes", "saliency", "filters",
                   "digit", "embedding"):
        assert f'id="{anchor}"' in text, anchor
    for words in ("Test accuracy", "precision", "recall", "F1", "Data provenance", "PCA of tanh3",
                  "t-SNE of tanh3", "test digit #5", "top-2:", "on the training and validation splits"):
        assert words in text, words
    # every source and link stays inside the file: data: images and #anchors only
    srcs = re.findall(r'\ssrc="([^"]*)"', text)
    hrefs = re.findall(r'\shref="([^"]*)"', text)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert hrefs and all(h.startswith("#") for h in hrefs)
    ids = set(re.findall(r'\sid="([^"]*)"', text))
    assert all(h[1:] in ids for h in hrefs)  # every mistake links to its saliency card and back
    assert "<script" not in text and "@import" not in text and "url(" not in text
    assert len(re.findall(r'class="card" id="m\d+"', text)) == 12


def test_report_opens_offline_in_headless_chromium(report):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent: install Debian's chromium to run the browser test")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.goto(report.resolve().as_uri(), wait_until="load")
            n, broken = page.evaluate("""() => {
                const imgs = Array.from(document.images);
                return [imgs.length, imgs.filter(i => !(i.complete && i.naturalWidth > 0)).length];
            }""")
            assert n > 40 and broken == 0, (n, broken)
            # the only thing fetched is the file itself (data: URIs are no requests)
            outside = [u for u in requests if not u.startswith("data:") and u != report.resolve().as_uri()]
            assert outside == [], outside
            # a mistake's saliency link leads to its saliency card
            first = page.locator(".card a").first
            target = first.get_attribute("href")
            first.click()
            assert page.evaluate("location.hash") == target
            assert page.locator(f"{target} img").count() == 3
        finally:
            browser.close()


def test_report_bad_input_is_one_line(cli, lenet_run, tmp_path):
    for extra, msg in [(("--out", tmp_path / "nope" / "r.html"), "does not exist"),
                       (("--out", tmp_path), "is a folder"),
                       (("--index", "10000"), "out of range"),
                       (("--tsne-sample", "3"), "--tsne-sample")]:
        r = cli("report", lenet_run, *extra)
        assert r.code == 2 and msg in r.err and len(r.err.strip().splitlines()) == 1, (extra, r.err)
    r = cli("report", tmp_path / "missing-run")
    assert r.code == 2 and "no such run folder" in r.err


def test_report_out_never_replaces_a_file_that_is_not_a_report(cli, lenet_run, report, tmp_path):
    from tegaki.commands.report import _is_report

    script = tmp_path / "mine.py"
    script.write_text("print('my work')\n")
    page = tmp_path / "notes.html"
    page.write_text("<!DOCTYPE html><p>my notes</p>\n")
    for out, msg in [(script, "a report is an HTML file; give a name ending in .html"),
                     (page, "exists and is not a tegaki report; choose another name (nothing was overwritten)")]:
        r = cli("report", lenet_run, "--out", out)
        assert r.code == 2 and msg in r.err and len(r.err.strip().splitlines()) == 1, r.err
    assert script.read_text() == "print('my work')\n" and page.read_text() == "<!DOCTYPE html><p>my notes</p>\n"
    assert _is_report(report) and not _is_report(page)  # a report tegaki wrote may be written again


def test_report_of_a_model_saved_from_python(cli, mnist_small, tmp_path):
    """`fit` in a notebook, `save`, then `tegaki report`: the saved metrics have no test figure (null)."""
    import tegaki as tg

    m = tg.Sequential([tg.Flatten(), tg.Dense(10), tg.Softmax()])
    m.fit(mnist_small.train_images[:2000], mnist_small.train_labels[:2000], epochs=1, validation_split=0.1, verbose=0)
    m.save(tmp_path / "mine")
    r = cli("report", tmp_path / "mine", "--tsne-sample", "100", "--mistakes", "4")
    assert r.code == 0, r.err
    html = (tmp_path / "mine" / "report.html").read_text(encoding="utf-8")
    assert "Test accuracy" in html and "when trained" not in html


def test_wide_figures_scroll_at_a_readable_size_and_hashes_wrap():
    """A figure far wider than the page (resnet-small's diagram is 2,818 px) keeps 80% of its size in a box that
    scrolls sideways; a usual one fits the column. Provenance hashes may wrap, so a phone needs no sideways scroll."""
    from tegaki import diagram, figures
    from tegaki.report import CSS, Page
    from tegaki.spec import load_preset

    page = Page("t")
    wide = page.figure(diagram.draw(load_preset("resnet-small")), "diagram")
    assert '<div class="scroll">' in wide and 'class="fig wide"' in wide and "scroll sideways" in wide
    width = int(wide.split('width="')[1].split('"')[0])
    assert 2000 < width < 2818
    narrow = page.figure(figures.new_figure((6, 3)), "small")
    assert "scroll" not in narrow and "width=" not in narrow
    assert "overflow-wrap:anywhere" in CSS


def test_the_report_fits_a_phone(lenet_run, tmp_path):
    """On a 390-px phone the page is 390 px wide: hashes wrap, wide tables and figures scroll in their own box."""
    from test_serve_browser import ARGS, CHROMIUM

    from tegaki.cli import main

    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed")
    from playwright.sync_api import sync_playwright

    out = tmp_path / "r.html"
    assert main(["report", str(lenet_run), "--out", str(out), "--tsne-sample", "100", "--mistakes", "4"]) == 0
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        pg = b.new_context(viewport={"width": 390, "height": 844}, is_mobile=True).new_page()
        pg.goto(out.as_uri())
        assert pg.evaluate("document.documentElement.scrollWidth") <= 390
        b.close()
