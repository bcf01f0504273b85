"""The one exception type for mistakes a user can make (bad names, values, files).

The CLI prints its message as a single line (newlines escaped) and exits non-zero; anything else that escapes is a bug.
"""

import difflib


class AezooError(Exception):
    """A user-facing error: the message is the whole story, no traceback needed."""


def unknown_name(kind: str, name: str, valid) -> AezooError:
    """An error for a name that is not among `valid`, suggesting the closest one."""
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else f"; valid: {', '.join(valid)}"
    return AezooError(f"unknown {kind} {name!r}{hint}")
