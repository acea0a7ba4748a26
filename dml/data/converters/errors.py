"""The one error type of the converters: a malformed or incomplete archive, or a bad flag."""


class ArchiveError(Exception):
    """Printed by prepare.py as one line on stderr, exit code 2, never a traceback."""
