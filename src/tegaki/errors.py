"""One exception type for everything a user can get wrong.

The CLI turns a TegakiError into one line on stderr and exit status 2; the HTTP API turns it
into a 4xx answer. Its message says what was wrong and what to do.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path


class TegakiError(Exception):
    """A problem with the user's input (file, option, spec), explained in one line."""


class Terminated(BaseException):
    """SIGTERM during training (raised by the CLI's signal handler): handled like Ctrl-C."""


_WRITABLE, _SPACE = "choose a folder you can write to", "free some disk space and try again"
_HINTS = {errno.EROFS: _WRITABLE, errno.EACCES: _WRITABLE, errno.EPERM: _WRITABLE, errno.ENOSPC: _SPACE,
          getattr(errno, "EDQUOT", errno.ENOSPC): _SPACE, errno.EEXIST: "choose another name"}


def os_error_line(e: OSError) -> str:
    """One line for a file the operating system refused (a read-only folder, a full disk ...): what, where
    (the file meant, not the temporary one being written), and what to do."""
    from tegaki.fileio import meant_file

    where = f": {meant_file(Path(os.fsdecode(e.filename)))}" if getattr(e, "filename", None) is not None else ""
    hint = _HINTS.get(e.errno)
    return f"{e.strerror or e}{where}" + (f"; {hint}" if hint else "")
