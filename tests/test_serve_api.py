"""The HTTP API through a real uvicorn server on a free port (in a thread), with the bundled model.

Good inputs are checked against the library (the same Predictor, in-process) and against MNIST's
own labels; bad inputs must each get a 4xx with a one-line message, never a 5xx.
"""

from __future__ import annotations

import base64
import io
import re
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from tegaki.data.preprocess import to_mnist
from tegaki.predict import Predictor, bundled_model_path
from tegaki.serve.app import Limits, create_app, serving
from sketches import DIGITS, drawing, huge_png  # tests/sketches.py

def decode_data_url(url: str) -> np.ndarray:
    assert url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    if bundled_model_path() is None:
        pytest.fail("the bundled model (src/tegaki/model/) is missing")
    return Predictor.load(None)


@pytest.fixture(scope="module")
def server(predictor, mnist_dir, tmp_path_factory):
    drawings = tmp_path_factory.mktemp("drawings")
    mnist = (mnist_dir / "t10k-images-idx3-ubyte.gz", mnist_dir / "t10k-labels-idx1-ubyte.gz")
    app = create_app(predictor.run, mnist=mnist, drawings=drawings)
    with serving(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        client.drawings = drawings
        yield client


def post_png(client, data: bytes, **params):
    return client.post("/api/predict", files={"file": ("drawing.png", data, "image/png")}, params=params)


# good inputs -------------------------------------------------------------------------------------
@pytest.mark.parametrize("digit", sorted(DIGITS))
def test_drawn_digits_are_recognised(server, predictor, digit):
    for width in (10, 30):  # a thin and a fat brush
        assert post_png(server, drawing(DIGITS[digit], width=width)).json()["label"] == digit
    data = drawing(DIGITS[digit])
    r = post_png(server, data)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["label"] == digit and body["name"] == str(digit)
    assert len(body["probabilities"]) == 10 and abs(sum(body["probabilities"]) - 1) < 1e-6
    assert body["confidence"] == max(body["probabilities"])
    # the input the network saw is exactly the library's preprocessing of the same bytes
    assert np.array_equal(np.array(body["input"], np.uint8), to_mnist(data).image)
    ref = predictor.predict_image(data)
    assert np.allclose(body["probabilities"], ref.probabilities, atol=1e-6)
    assert float(r.headers["x-process-time"]) > 0 and "app;dur=" in r.headers["server-timing"]


def test_raw_image_bodies_and_jpeg(server):
    for fmt, ctype in (("PNG", "image/png"), ("JPEG", "image/jpeg")):
        r = server.post("/api/predict", content=drawing(DIGITS[7], fmt=fmt), headers={"content-type": ctype})
        assert r.status_code == 200 and r.json()["label"] == 7


def test_json_pixels_of_mnist_digits(server, mnist):
    for i in range(8):
        img = mnist.test_images[i]
        for pixels in (img.tolist(), img.ravel().tolist(), (img / 255.0).tolist()):
            r = server.post("/api/predict", json={"pixels": pixels})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["label"] == mnist.test_labels[i]
            assert np.abs(np.array(body["input"]) - img.astype(int)).mean() < 2  # MNIST in, MNIST out


def test_steps_and_top_k(server):
    r = post_png(server, drawing(DIGITS[1]), steps="true", top=5)
    body = r.json()
    assert [s["name"] for s in body["steps"]] == ["grey", "ink", "cropped", "strokes", "resized", "centred"]
    centred = decode_data_url(body["steps"][-1]["png"])
    assert centred.shape == (28, 28) and np.abs(centred.astype(int) - np.array(body["input"])).max() <= 1
    assert len(body["top"]) == 5 and body["top"][0]["label"] == body["label"]
    assert body["info"]["polarity"] == "dark ink on light"
    r = server.post("/api/predict", json={"pixels": np.zeros((28, 28)).tolist(), "steps": True})
    assert r.status_code == 422  # (empty: see below) the flag itself is accepted


def test_model_health_and_docs(server, predictor):
    h = server.get("/api/health").json()
    assert h == {"status": "ok", "model": predictor.spec.name, "mnist": True, "saving": True}
    m = server.get("/api/model").json()
    assert m["classes"] == [str(i) for i in range(10)] and m["bundled"] is True
    assert m["metrics"]["test_accuracy"] >= 0.995 and m["parameters"] == predictor.spec.num_params()
    assert m["command"][:2] == ["tegaki", "train"]
    assert [l["name"] for l in m["layers"]] == [l.name for l in predictor.spec.layers]
    spec = server.get("/openapi.json").json()
    assert {"/api/predict", "/api/features", "/api/random", "/api/save", "/api/model", "/api/health"} <= set(spec["paths"])
    assert "multipart/form-data" in spec["paths"]["/api/predict"]["post"]["requestBody"]["content"]
    assert server.get("/docs").status_code == 200
    page = server.get("/")
    assert page.status_code == 200 and "<canvas" in page.text
    assert server.get("/static/app.js").status_code == 200


def test_feature_maps_match_the_engine(server, predictor):
    data = drawing(DIGITS[0])
    body = server.post("/api/features", files={"file": ("d.png", data, "image/png")}).json()
    maps = predictor.feature_maps(to_mnist(data).image)
    assert [l["name"] for l in body["layers"]] == [m[0] for m in maps] and len(maps) == 2
    for layer, (_, read, a) in zip(body["layers"], maps):
        c, h, w = a.shape
        assert layer["shape"] == [c, h, w] and layer["read"] == read
        img = decode_data_url(layer["png"])
        assert img.shape == (layer["rows"] * (h + 1) - 1, layer["cols"] * (w + 1) - 1)
        # the first map's tile is that map, stretched to 0..255
        tile = img[:h, :w].astype(float)
        ref = a[0] / a[0].max() * 255 if a[0].max() > 0 else np.zeros_like(a[0])
        assert np.abs(tile - ref).max() <= 1.01


def test_random_test_digit(server, mnist):
    body = server.get("/api/random", params={"index": 1234}).json()
    assert body["index"] == 1234 and body["true_label"] == mnist.test_labels[1234]
    assert np.array_equal(np.array(body["pixels"], np.uint8), mnist.test_images[1234])
    assert body["prediction"]["label"] == mnist.test_labels[1234]
    assert server.get("/api/random").status_code == 200
    assert server.get("/api/random", params={"index": 10000}).status_code == 422


def test_saved_drawings_are_a_folder_dataset(server, cli, tmp_path):
    saved = []
    for digit, strokes in DIGITS.items():
        for width in (14, 22):
            r = server.post("/api/save", params={"label": digit},
                            files={"file": ("d.png", drawing(strokes, width=width), "image/png")})
            assert r.status_code == 200, r.text
            saved.append(r.json())
    root = server.drawings
    assert {p.parent.name for p in root.rglob("*.png")} == {str(d) for d in DIGITS}
    assert saved[-1]["count"] == 2 and saved[-1]["folder"] == str(root)
    r = cli("evaluate", bundled_model_path(), "--dataset", f"folder:{root}", "--out", tmp_path / "eval")
    assert r.code == 0, r.err
    assert "accuracy 100.00%" in r.out and "20 test images" in r.out


# bad inputs ---------------------------------------------------------------------------------------
def truncated_png() -> bytes:
    data = drawing(DIGITS[7])
    return data[: len(data) // 2]


NAN_JSON = b'{"pixels": [' + b", ".join([b"NaN"] * 784) + b"]}"
BAD = {
    "not an image": (dict(files={"file": ("x.png", b"hello, I am text", "image/png")}), 422, "not an image"),
    "truncated png": (dict(files={"file": ("x.png", truncated_png(), "image/png")}), 422, "truncated"),
    "empty upload": (dict(files={"file": ("x.png", b"", "image/png")}), 422, "empty"),
    "no file field": (dict(data={"steps": "true"}, files={"x": ("", b"", "")}), 422, "not an image|no file|empty"),
    "wrong json shape": (dict(json={"pixels": [[0] * 28] * 27}), 422, "27x28"),
    "ragged json": (dict(json={"pixels": [[0] * 28] * 27 + [[0] * 5]}), 422, "different lengths"),
    "json strings": (dict(json={"pixels": [["a"] * 28] * 28}), 422, "not a number"),
    "json no pixels": (dict(json={"image": []}), 422, "'pixels'"),
    "json list body": (dict(json=[1, 2, 3]), 422, "'pixels'"),
    "nan": (dict(content=NAN_JSON, headers={"content-type": "application/json"}), 422, "NaN"),
    "out of range": (dict(json={"pixels": [[300] * 28] * 28}), 422, "0..255"),
    "malformed json": (dict(content=b'{"pixels": [1, 2', headers={"content-type": "application/json"}), 400,
                       "malformed JSON"),
    "text/plain": (dict(content=b"hello", headers={"content-type": "text/plain"}), 415, "Content-Type"),
    "no content type": (dict(content=b"hello"), 415, "Content-Type"),
    "empty canvas": (dict(files={"file": ("x.png", drawing([]), "image/png")}), 422, "no digit"),
    "empty pixels": (dict(json={"pixels": [0] * 784}), 422, "no digit"),
    "multipart without boundary": (dict(content=b"--xyz\r\n\r\nabc", headers={"content-type": "multipart/form-data"}),
                                   400, "malformed multipart"),
    "unterminated multipart": (dict(content=b"--xyz\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nabc",
                                    headers={"content-type": "multipart/form-data; boundary=xyz"}), 422, "no file"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_inputs_are_4xx_with_a_clear_message(server, case):
    kw, status, words = BAD[case]
    r = server.post("/api/predict", **kw)
    assert r.status_code == status, (case, r.status_code, r.text)
    detail = r.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and len(detail) < 300
    assert re.search(words, detail), detail


def test_decompression_bomb_is_refused_quickly(server):
    bomb = huge_png(20000, 20000)  # 400 million pixels in well under a megabyte
    assert len(bomb) < 1_000_000
    t = time.perf_counter()
    r = post_png(server, bomb)
    assert r.status_code == 413 and "pixels" in r.json()["detail"]
    r = server.post("/api/predict", content=huge_png(6000, 5000), headers={"content-type": "image/png"})
    assert r.status_code == 413
    assert time.perf_counter() - t < 3.0


def test_bad_query_and_routes(server):
    assert post_png(server, drawing(DIGITS[1]), top=0).status_code == 422
    r = server.post("/api/save", params={"label": 10}, files={"file": ("d.png", drawing(DIGITS[1]), "image/png")})
    assert r.status_code == 422 and "0..9" in r.json()["detail"]
    r = server.post("/api/save", files={"file": ("d.png", drawing(DIGITS[1]), "image/png")})
    assert r.status_code == 422 and "label" in r.json()["detail"]
    before = sorted(server.drawings.rglob("*"))
    r = server.post("/api/save", params={"label": 3}, files={"file": ("d.png", drawing([]), "image/png")})
    assert r.status_code == 422 and "no digit" in r.json()["detail"]
    assert sorted(server.drawings.rglob("*")) == before  # nothing written, not even half a file
    assert server.get("/api/predict").status_code == 405
    assert server.get("/api/nothing").status_code == 404
    for path in ("/", "/api/health"):  # HEAD, as link checkers and uptime monitors ask: the GET's answer, no body
        head, get = server.head(path), server.get(path)
        assert head.status_code == 200 and head.content == b"", path
        assert head.headers["content-type"] == get.headers["content-type"], path
    assert server.head("/api/predict").status_code == 405


def test_a_part_without_a_filename_is_named_as_the_problem(server):
    """curl -F 'file=<x.png' sends the image as a text field (no filename): the answer says so and how to send a
    file, small or over the 64 KB a text field may hold, and with only RFC 5987's filename* too."""
    def send(data: bytes, disposition: str = 'name="file"'):
        body = (b"--XX\r\nContent-Disposition: form-data; " + disposition.encode() +
                b"\r\nContent-Type: image/png\r\n\r\n" + data + b"\r\n--XX--\r\n")
        return server.post("/api/predict", content=body, headers={"Content-Type": "multipart/form-data; boundary=XX"})

    small, big = drawing(DIGITS[3]), drawing(DIGITS[3], canvas=600, fmt="BMP")
    assert len(small) < 64 * 1024 < len(big)
    for r, status in ((send(small), 422), (send(big), 400), (send(small, "name=\"file\"; filename*=UTF-8''d%C3%A9.png"), 422)):
        assert r.status_code == status, r.text
        assert "without a filename was read as a text field" in r.json()["detail"] and "-F file=@PATH" in r.json()["detail"]
    assert send(small, 'name="file"; filename="d.png"').json()["label"] == 3  # with a filename: read


def test_upload_limit_and_no_mnist_no_saving(predictor):
    app = create_app(predictor, limits=Limits(max_upload=100_000))
    big = drawing(DIGITS[7], canvas=2000, fmt="BMP")  # a few MB, uncompressed
    with serving(app) as url, httpx.Client(base_url=url) as c:
        r = c.post("/api/predict", content=big, headers={"content-type": "image/bmp"})
        assert r.status_code == 413 and "larger than" in r.json()["detail"]
        r = c.post("/api/predict", files={"file": ("d.bmp", big, "image/bmp")})
        assert r.status_code == 413
        r = c.get("/api/random")
        assert r.status_code == 404 and "--data-dir" in r.json()["detail"]
        r = c.post("/api/save", params={"label": 1}, files={"file": ("d.png", drawing(DIGITS[1]), "image/png")})
        assert r.status_code == 404 and "saving" in r.json()["detail"]
        assert c.get("/api/health").json()["mnist"] is False


def test_concurrent_requests_agree(server):
    from concurrent.futures import ThreadPoolExecutor

    data = {d: drawing(s) for d, s in DIGITS.items()}
    jobs = [d for d in DIGITS for _ in range(3)]
    with ThreadPoolExecutor(8) as pool:
        labels = list(pool.map(lambda d: post_png(server, data[d]).json()["label"], jobs))
    assert labels == jobs


def test_serve_command_errors_are_one_line(cli, tmp_path):
    r = cli("serve", "--model", tmp_path / "missing")
    assert r.code == 2 and "no such run folder" in r.err and r.err.count("\n") == 1
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    try:
        r = cli("serve", "--port", s.getsockname()[1])
        assert r.code == 2 and "choose another --port" in r.err
    finally:
        s.close()


def test_damaged_images_never_cause_a_server_error(server):
    """Random damage to PNG, JPEG, GIF, BMP and TIFF files: every answer is a 200, 413 or 422."""
    rng = np.random.default_rng(7)
    im = Image.open(io.BytesIO(drawing(DIGITS[7]))).convert("RGB")
    originals = []
    for fmt in ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"):
        buf = io.BytesIO()
        im.save(buf, fmt)
        originals.append(buf.getvalue())
    statuses = set()
    for k in range(60):
        data = bytearray(originals[k % len(originals)])
        for _ in range(int(rng.integers(1, 20))):  # flip bytes, mostly in the headers
            i = int(rng.integers(0, min(len(data), 200 if k % 2 else len(data))))
            data[i] = int(rng.integers(0, 256))
        if k % 3 == 0:
            data = data[: int(rng.integers(8, len(data)))]
        r = post_png(server, bytes(data))
        statuses.add(r.status_code)
        assert r.status_code in (200, 413, 422), (k, r.status_code, r.text)
    assert 422 in statuses
    r = server.post("/api/predict", json={"pixels": [10 ** 400] * 784})
    assert r.status_code == 422


def test_the_serve_command_as_a_user_runs_it(mnist_dir, tmp_path):
    """`python -m tegaki serve` in its own process: it prints where to go, serves the page and the API."""
    import os
    import socket
    import subprocess
    import sys

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    env = {k: v for k, v in os.environ.items() if k != "TEGAKI_DATA_DIR"}
    cmd = [sys.executable, "-m", "tegaki", "serve", "--port", str(port), "--data-dir", str(mnist_dir),
           "--drawings", str(tmp_path / "drawings")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        t0 = time.monotonic()
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(url + "/api/health", timeout=2).json()["mnist"] is True:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() - t0 < 90, "the server did not come up"
            time.sleep(0.3)
        assert "<canvas" in httpx.get(url + "/").text
        r = httpx.post(url + "/api/predict", files={"file": ("d.png", drawing(DIGITS[7]), "image/png")})
        assert r.json()["label"] == 7
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0]
    assert f"open http://127.0.0.1:{port}/" in out and "MNIST test set" in out and str(tmp_path / "drawings") in out
