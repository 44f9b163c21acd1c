"""The HTTP protocol `tegaki serve` runs: uvicorn's own (httptools where installed, else h11) with a
deadline for a request's headers, and one line of JSON for a request it cannot parse.

uvicorn waits for ever on a connection that opens and sends nothing, or sends its headers a byte at a
time ("slowloris"): each holds a socket and a file descriptor, and a few hundred of them use up the
process's. Here a request's headers must arrive within HEADER_SECONDS of the connection opening, or
of the previous answer on a kept-alive connection. A connection that sent part of its headers gets a
408 and is closed; one that sent nothing is closed without a word, as browsers' idle pre-opened
connections expect. The body has its own deadline (Limits.body_seconds, serve/requests.py).
"""

from __future__ import annotations

import json

from uvicorn.protocols.http.auto import AutoHTTPProtocol

from tegaki.serve.limits import HEADER_SECONDS


def _answer(status: bytes, detail: str) -> bytes:
    """A whole HTTP/1.1 answer with one line of JSON, as every other refusal of the server has."""
    body = json.dumps({"detail": detail}).encode()
    return (b"HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n" % (status, len(body))) + body


_LATE = _answer(b"408 Request Timeout", "the request's headers did not arrive in time; send them whole")
_MALFORMED = _answer(b"400 Bad Request", "malformed HTTP request: its request line, headers or framing (such as "
                                         "Content-Length) could not be read; send a well-formed HTTP/1.1 request")


class HeaderDeadline(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
    header_seconds: float = HEADER_SECONDS

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._deadline, self._seen, self._heard = None, self.cycle, False
        self._arm()

    def data_received(self, data: bytes) -> None:
        self._heard = True
        super().data_received(data)
        if self.cycle is not self._seen:  # a new request: its headers have all arrived
            self._seen = self.cycle
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():  # kept alive: the next request's headers start their own clock
            self._heard = False
            self._arm()

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.header_seconds, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing() or (self.cycle is not None and not self.cycle.response_complete):
            return  # closed already, or a request is being answered (pipelined headers wait their turn)
        if self._heard:
            self.transport.write(_LATE)
        self.transport.close()

    def send_400_response(self, msg: str) -> None:  # uvicorn's answer when its parser fails is plain text
        self._disarm()
        self.transport.write(_MALFORMED)
        self.transport.close()


def with_deadline(seconds: float) -> type:
    """HeaderDeadline with another deadline (tests; `serving` in notebooks)."""
    return type("HeaderDeadline", (HeaderDeadline,), {"header_seconds": float(seconds)})
