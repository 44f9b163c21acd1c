"""Downloads that go wrong in the ways real ones do, against a real HTTP server on 127.0.0.1.

A damaged gzip, a connection cut mid-answer, a server trickling 2 bytes a second, two downloads
into one cache at once, temporary files a killed process left, and a download without a checksum.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import pytest

from tegaki.data.download import clean_stale, download, payload_sha256
from tegaki.errors import TegakiError

from test_spine_download import Server, debris, idx_gz

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 600, msg
    return msg


def cut_after(n: int, data: bytes):
    """An answer announcing all of `data` whose connection closes after its first `n` bytes."""
    def answer(h):
        h.send_response(200)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data[:n])
        h.wfile.flush()
        h.close_connection = True
    return answer


def trickle(data: bytes, per_second: int = 2, stop: threading.Event | None = None):
    """An answer sending `per_second` bytes a second (until the client hangs up or `stop` is set)."""
    def answer(h):
        h.send_response(200)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        try:
            for i in range(0, len(data), per_second):
                if stop is not None and stop.is_set():
                    return
                h.wfile.write(data[i:i + per_second])
                h.wfile.flush()
                time.sleep(1.0)
        except OSError:
            pass  # the client gave up, as it should
    return answer


def slow(data: bytes, pieces: int = 4, pause: float = 0.01):
    """The whole answer, in a few pieces with pauses between (so that concurrent downloads overlap)."""
    def answer(h):
        h.send_response(200)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        step = -(-len(data) // pieces)
        for i in range(0, len(data), step):
            h.wfile.write(data[i:i + step])
            h.wfile.flush()
            time.sleep(pause)
    return answer


def test_a_damaged_gzip_is_a_checksum_mismatch_not_a_zlib_error(server, tmp_path):
    data, sha = idx_gz(200)
    bad = data[:10] + b"\xff" + data[11:]  # same length; the first deflate block has the reserved type 3
    with pytest.raises(zlib.error):
        gzip.decompress(bad)  # the reference: what gzip makes of it
    server.routes["/x.gz"] = bad
    with pytest.raises(TegakiError) as e:
        download([server.url + "/x.gz"], tmp_path / "x.gz", {"sha256": sha}, backoff=0)
    assert "checksum mismatch (its gzip stream is damaged)" in one_line(e)
    assert debris(tmp_path) == []
    (tmp_path / "y.gz").write_bytes(bad)
    with pytest.raises(TegakiError, match="cannot read"):
        payload_sha256(tmp_path / "y.gz")  # the reader itself: zlib.error becomes a TegakiError


def test_a_connection_cut_mid_answer_is_interrupted_and_retried(server, tmp_path):
    data, sha = idx_gz(200)
    server.routes["/x.gz"] = [cut_after(len(data) // 3, data), data]
    logs = []
    url = download([server.url + "/x.gz"], tmp_path / "x.gz", {"sha256": sha}, log=logs.append, backoff=0)
    assert url.endswith("/x.gz") and server.hits["/x.gz"] == 2
    assert payload_sha256(tmp_path / "x.gz") == sha and debris(tmp_path) == ["x.gz"]
    text = "\n".join(logs)
    assert f"interrupted: the connection closed after {len(data) // 3:,} of {len(data):,} bytes); retrying" in text
    assert "checksum" not in text.split("downloaded")[0]  # not reported as a damaged file


def test_a_mirror_that_always_cuts_gives_way_to_the_next(server, tmp_path):
    data, sha = idx_gz(200)
    server.routes["/a/x.gz"] = cut_after(100, data)
    server.routes["/b/x.gz"] = data
    url = download([server.url + "/a/x.gz", server.url + "/b/x.gz"], tmp_path / "x.gz", {"sha256": sha},
                   retries=1, backoff=0)
    assert url.endswith("/b/x.gz") and server.hits["/a/x.gz"] == 2 and debris(tmp_path) == ["x.gz"]


def test_a_trickling_server_meets_the_deadline(server, tmp_path):
    data, sha = idx_gz(20)
    stop = threading.Event()
    server.routes["/x.gz"] = trickle(data, 2, stop)
    t0 = time.monotonic()
    try:
        with pytest.raises(TegakiError) as e:
            download([server.url + "/x.gz"], tmp_path / "x.gz", {"sha256": sha}, deadline=1.5, timeout=30,
                     backoff=0)
    finally:
        stop.set()
    took = time.monotonic() - t0
    msg = one_line(e)
    assert "within its 1.5 s deadline" in msg and "too slow" in msg
    assert 1.4 < took < 4.0, took  # the per-read timeout (30 s) alone would never fire at 2 bytes/s
    assert server.hits["/x.gz"] == 1  # the deadline is for the file, not per attempt
    assert debris(tmp_path) == []


def test_many_downloads_into_one_cache_at_once(server, tmp_path):
    data, sha = idx_gz(300)
    server.routes["/x.gz"] = slow(data)
    dest, failures = tmp_path / "cache" / "x.gz", []

    def fetch():
        try:
            download([server.url + "/x.gz"], dest, {"sha256": sha}, retries=0, backoff=0)
        except Exception as e:  # noqa: BLE001  (any failure is the bug)
            failures.append(repr(e))

    threads = [threading.Thread(target=fetch) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == [] and server.hits["/x.gz"] == 12
    assert payload_sha256(dest) == sha and debris(dest.parent) == ["x.gz"]


def test_two_processes_fetching_into_one_cache(server, tmp_path):
    data, sha = idx_gz(300)
    server.routes["/x.gz"] = slow(data, pieces=8, pause=0.005)
    dest = tmp_path / "cache" / "x.gz"
    code = ("import sys\nfrom tegaki.data.download import download\n"
            "for _ in range(10):\n"
            f"    download([{server.url + '/x.gz'!r}], {str(dest)!r}, {{'sha256': {sha!r}}}, retries=0, backoff=0)\n")
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    errs = [p.communicate(timeout=60)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    assert server.hits["/x.gz"] == 20 and payload_sha256(dest) == sha and debris(dest.parent) == ["x.gz"]


def test_ctrl_c_mid_write_leaves_nothing(server, tmp_path):
    data, sha = idx_gz(300)
    server.routes["/x.gz"] = data

    class Interrupting:  # a terminal whose progress bar is interrupted by Ctrl-C
        def isatty(self):
            return True

        def write(self, s):
            raise KeyboardInterrupt

        def flush(self):
            pass

    with pytest.raises(KeyboardInterrupt):
        download([server.url + "/x.gz"], tmp_path / "x.gz", {"sha256": sha}, progress_stream=Interrupting())
    assert debris(tmp_path) == []


def age(p: Path, seconds: float) -> Path:
    t = time.time() - seconds
    os.utime(p, (t, t))
    return p


def test_stale_temporary_files_are_removed_when_a_download_starts(server, tmp_path):
    data, sha = idx_gz()
    server.routes["/x.gz"] = data
    for name, seconds in ((".x.gz.4242.deadbeef.partial", 7200), ("x.gz.partial", 7200),
                          (".t10k-images-idx3-ubyte.77.0badf00d.tmp", 4000), (".x.gz.1.cafe.partial", 60),
                          ("notes.txt", 7200), ("old.tmp", 7200)):
        (tmp_path / name).write_bytes(b"\0" * 1000)
        age(tmp_path / name, seconds)
    logs = []
    download([server.url + "/x.gz"], tmp_path / "x.gz", {"sha256": sha}, log=logs.append)
    # an hour-old temporary file belongs to no live download; a minute-old one may, and stays
    assert debris(tmp_path) == [".x.gz.1.cafe.partial", "notes.txt", "old.tmp", "x.gz"]
    assert any("removed .x.gz.4242.deadbeef.partial" in m for m in logs)
    assert clean_stale(tmp_path) == [] and clean_stale(tmp_path / "nowhere") == []


def test_a_download_without_a_checksum_is_refused_unless_asked_for(server, tmp_path, caplog):
    data, _ = idx_gz(200)
    server.routes["/x.gz"] = data
    with pytest.raises(TegakiError) as e:
        download([server.url + "/x.gz"], tmp_path / "x.gz")
    assert "no checksum" in one_line(e) and "allow_unverified=True" in str(e.value)
    assert server.hits.get("/x.gz") is None and debris(tmp_path) == []
    logs = []
    with caplog.at_level(logging.WARNING, logger="tegaki.data.download"):
        download([server.url + "/x.gz"], tmp_path / "x.gz", allow_unverified=True, log=logs.append)
    assert (tmp_path / "x.gz").read_bytes() == data
    assert any("WITHOUT a checksum" in r.getMessage() for r in caplog.records)
    assert any(m.startswith("warning:") and "not verified" in m for m in logs)


def test_unverified_still_refuses_a_truncated_gzip(server, tmp_path):
    # served complete as far as HTTP can tell (Content-Length matches), but the gzip stream is cut short
    data, _ = idx_gz(200)
    server.routes["/x.gz"] = data[: len(data) // 2]
    with pytest.raises(TegakiError) as e:
        download([server.url + "/x.gz"], tmp_path / "x.gz", allow_unverified=True, backoff=0)
    assert "gzip stream is damaged" in one_line(e) and debris(tmp_path) == []
    raw = gzip.decompress(data)
    server.routes["/raw"] = raw  # not gzip: nothing to check it by, accepted as asked
    download([server.url + "/raw"], tmp_path / "raw", allow_unverified=True)
    assert hashlib.sha256((tmp_path / "raw").read_bytes()).hexdigest() == hashlib.sha256(raw).hexdigest()


def test_a_redirect_loop_is_one_line(server, tmp_path):
    """urllib gives up on an endless redirect with a message of several lines; the error stays one line."""
    def loop(h):
        h.send_response(302)
        h.send_header("Location", "/loop")
        h.send_header("Content-Length", "0")
        h.end_headers()
    server.routes["/loop"] = loop
    with pytest.raises(TegakiError) as e:
        download([server.url + "/loop"], tmp_path / "x.gz", {"sha256": "0" * 64}, retries=0, backoff=0)
    assert "HTTP 302" in one_line(e) and "redirect" in one_line(e)
    assert debris(tmp_path) == []
