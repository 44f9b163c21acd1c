"""What one request may cost the server: the limits, as constants, in one place (light to import:
the CLI reads them for its --help).

  MAX_UPLOAD  bytes in one request body (8 MB: a phone photo as a JPEG is 2-5 MB)
  MAX_PIXELS  pixels in one image, read from its header before anything is decoded: 4096 x 4096
              (16.8 M). The page sends 140 x 140; a 12 MP phone photo (4032 x 3024) fits. An image
              costs about 6 bytes per pixel on its way to grey levels (about 100 MB at the limit),
              so this limit and DECODES bound what images in flight can take.
  DECODES     images decoded and preprocessed at the same time; other requests wait their turn,
              holding only their (capped) body.
  MAX_BATCH   images in one shared network call (serve/batch.py: 8 was the cheapest per image)
  WAIT_MS     how long a batch may wait for photos still being decoded (in the pool)
  BODY_SECONDS  how long a request body may take to arrive (a client that stalls mid-upload would hold
              its part of the body for ever; it gets 408 instead)
  HEADER_SECONDS  how long a request's headers may take (serve/protocol.py: a connection that sends nothing,
              or its headers a byte at a time, would hold a socket for ever)
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_UPLOAD = 8 * 1024 * 1024
MAX_PIXELS = 4096 * 4096
DECODES = 2
MAX_BATCH = 8
WAIT_MS = 2.0
BODY_SECONDS = 30.0
HEADER_SECONDS = 10.0


@dataclass
class Limits:
    max_upload: int = MAX_UPLOAD  # bytes in one request body
    max_pixels: int = MAX_PIXELS  # pixels in one image (from its header)
    body_seconds: float = BODY_SECONDS  # time for a request body to arrive, whole
