"""One exception type for everything a user can get wrong.

The CLI turns a TegakiError into one line on stderr and exit status 2; the HTTP API turns it
into a 4xx answer. Its message says what was wrong and what to do.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path


class TegakiError(Exception):
    """A problem with the user's input (file, option, spec), explained in one line."""


_HINTS = {errno.EROFS: "choose a folder you can write to", errno.EACCES: "choose a folder you can write to",
          errno.EPERM: "choose a folder you can write to", errno.ENOSPC: "free some disk space and try again",
          getattr(errno, "EDQUOT", errno.ENOSPC): "free some disk space and try again", errno.EEXIST: "choose another name"}
_TMP = re.compile(r"^\.(.+)\.\d+\.[0-9a-f]+\.tmp$")  # tegaki.fileio's temporary names


def os_error_line(e: OSError) -> str:
    """One line for a file the operating system refused (a read-only folder, a full disk ...): what, where
    (the file meant, not the temporary one being written), and what to do."""
    where = ""
    if getattr(e, "filename", None) is not None:
        p = Path(os.fsdecode(e.filename))
        m = _TMP.match(p.name)
        where = f": {p.parent / m.group(1) if m else p}"
    hint = _HINTS.get(e.errno)
    return f"{e.strerror or e}{where}" + (f"; {hint}" if hint else "")
