"""The error a user can fix, and how any exception reads as one line."""


class UserError(Exception):
    """A mistake the user can fix (bad flag, missing file, ...).

    Scripts print its message as one line and exit non-zero; never a traceback.
    """

    exit_code = 2


def first_line(exc):
    """The first line of an exception's message, or its type name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
