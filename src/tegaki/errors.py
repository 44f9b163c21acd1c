"""One exception type for everything a user can get wrong.

The CLI turns a TegakiError into one line on stderr and exit status 2; the HTTP API turns it
into a 4xx answer. Its message says what was wrong and what to do.
"""


class TegakiError(Exception):
    """A problem with the user's input (file, option, spec), explained in one line."""
