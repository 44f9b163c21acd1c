"""Downloads from a real HTTP server on 127.0.0.1: checksums, mirrors, retries, no debris."""

from __future__ import annotations

import gzip
import hashlib
import io
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from tegaki.data.download import download, payload_sha256
from tegaki.data.idx import read_idx
from tegaki.errors import TegakiError


class Server:
    """A loopback HTTP server; `routes[path]` is bytes, an int status, a function that answers
    the request itself (given the handler), or a list of those (one per request, the last
    repeated): [503, 503, data] fails twice, then serves."""

    def __init__(self):
        self.routes: dict[str, object] = {}
        self.hits: dict[str, int] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                n = outer.hits.get(self.path, 0)
                outer.hits[self.path] = n + 1
                r = outer.routes.get(self.path, 404)
                if isinstance(r, list):
                    r = r[min(n, len(r) - 1)]
                if isinstance(r, int):
                    self.send_error(r)
                    return
                if callable(r):
                    r(self)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(r)))
                self.end_headers()
                self.wfile.write(r)

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def refused_url() -> str:
    """A loopback port nobody listens on (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/x.gz"


def idx_gz(n=20) -> tuple[bytes, str]:
    a = np.random.default_rng(n).integers(0, 256, (n, 28, 28), dtype=np.uint8)
    buf = io.BytesIO()
    raw = bytes([0, 0, 8, 3]) + (n).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + a.tobytes()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as f:
        f.write(raw)
    return buf.getvalue(), hashlib.sha256(raw).hexdigest()


def debris(folder):
    return sorted(p.name for p in folder.iterdir())


def test_success_verified_by_payload_sha256(server, tmp_path):
    data, sha = idx_gz()
    server.routes["/m/x.gz"] = data
    logs = []
    dest = tmp_path / "cache" / "x.gz"
    url = download([server.url + "/m/x.gz"], dest, {"sha256": sha}, log=logs.append)
    assert url == server.url + "/m/x.gz"
    assert dest.read_bytes() == data and payload_sha256(dest) == sha
    assert read_idx(dest).shape == (20, 28, 28)
    assert debris(dest.parent) == ["x.gz"]
    assert any("checksum verified" in m for m in logs)


def test_md5_of_the_file_is_checked_too(server, tmp_path):
    data, _ = idx_gz()
    server.routes["/x.gz"] = data
    download([server.url + "/x.gz"], tmp_path / "x.gz", {"md5": hashlib.md5(data).hexdigest()})
    with pytest.raises(TegakiError):
        download([server.url + "/x.gz"], tmp_path / "y.gz", {"md5": "0" * 32})
    assert debris(tmp_path) == ["x.gz"]


def test_checksum_mismatch_leaves_nothing(server, tmp_path):
    data, sha = idx_gz()
    server.routes["/x.gz"] = data
    dest = tmp_path / "x.gz"
    with pytest.raises(TegakiError) as e:
        download([server.url + "/x.gz"], dest, {"sha256": "f" * 64}, backoff=0)
    msg = str(e.value)
    assert "checksum mismatch" in msg and "\n" not in msg
    assert debris(tmp_path) == []  # no file, no .partial
    assert server.hits["/x.gz"] == 1  # a wrong file is not fetched again from the same mirror


def test_html_error_page_served_with_200_is_rejected(server, tmp_path):
    _, sha = idx_gz()
    server.routes["/x.gz"] = b"<html><body>rate limited</body></html>"
    with pytest.raises(TegakiError):
        download([server.url + "/x.gz"], tmp_path / "x.gz", {"sha256": sha}, backoff=0)
    assert debris(tmp_path) == []


def test_falls_over_to_the_next_mirror(server, tmp_path):
    data, sha = idx_gz()
    server.routes["/good/x.gz"] = data
    logs = []
    urls = [refused_url(), server.url + "/missing/x.gz", server.url + "/good/x.gz"]
    url = download(urls, tmp_path / "x.gz", {"sha256": sha}, log=logs.append, backoff=0)
    assert url == urls[2]
    assert server.hits["/missing/x.gz"] == 1  # a 404 is not retried
    assert any("HTTP 404" in m for m in logs) and any("refused" in m.lower() for m in logs)
    assert debris(tmp_path) == ["x.gz"]


def test_a_mirror_with_a_wrong_file_then_a_good_one(server, tmp_path):
    data, sha = idx_gz()
    other, _ = idx_gz(7)
    server.routes["/a/x.gz"] = other
    server.routes["/b/x.gz"] = data
    url = download([server.url + "/a/x.gz", server.url + "/b/x.gz"], tmp_path / "x.gz", {"sha256": sha}, backoff=0)
    assert url.endswith("/b/x.gz") and payload_sha256(tmp_path / "x.gz") == sha


def test_retries_a_flaky_mirror(server, tmp_path):
    data, sha = idx_gz()
    server.routes["/x.gz"] = [503, 500, data]
    download([server.url + "/x.gz"], tmp_path / "x.gz", {"sha256": sha}, retries=2, backoff=0)
    assert server.hits["/x.gz"] == 3
    server.routes["/y.gz"] = [503, 503, 503, data]
    with pytest.raises(TegakiError) as e:
        download([server.url + "/y.gz"], tmp_path / "y.gz", {"sha256": sha}, retries=2, backoff=0)
    assert server.hits["/y.gz"] == 3 and "HTTP 503" in str(e.value)
    assert debris(tmp_path) == ["x.gz"]


def test_all_mirrors_fail_one_line(tmp_path):
    with pytest.raises(TegakiError) as e:
        download([refused_url(), refused_url()], tmp_path / "x.gz", {"sha256": "0" * 64}, retries=1, backoff=0)
    msg = str(e.value)
    assert "\n" not in msg and "could not download x.gz from any of 2 mirror(s)" in msg
    assert debris(tmp_path) == []


def test_progress_bar_on_a_terminal(server, tmp_path):
    data, sha = idx_gz(200)
    server.routes["/x.gz"] = data

    class Tty(io.StringIO):
        def isatty(self):
            return True

    tty = Tty()
    download([server.url + "/x.gz"], tmp_path / "x.gz", {"sha256": sha}, progress_stream=tty)
    out = tty.getvalue()
    assert "x.gz [" in out and "100%" in out and out.endswith("\n")
    # and silence when the stream is not a terminal
    quiet = io.StringIO()
    download([server.url + "/x.gz"], tmp_path / "y.gz", {"sha256": sha}, progress_stream=quiet)
    assert quiet.getvalue() == ""


def test_an_endless_answer_is_cut_off(server, tmp_path):
    data, sha = idx_gz(400)
    server.routes["/x.gz"] = data
    with pytest.raises(TegakiError) as e:
        download([server.url + "/x.gz"], tmp_path / "x.gz", {"sha256": sha}, max_bytes=50_000, backoff=0)
    assert "more than 50,000 bytes" in str(e.value)
    assert server.hits["/x.gz"] == 1  # and not asked again
    assert debris(tmp_path) == []
