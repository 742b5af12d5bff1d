"""The one exception type users see: its message is printed as a single line and the CLI exits 2."""


class LongdocError(Exception):
    """A problem with the user's input or environment, explained in one line (no traceback)."""
