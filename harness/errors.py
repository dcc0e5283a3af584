"""Errors that the command line reports as one line and exit code 2 (bad input)."""


class HarnessError(Exception):
    """A problem with the user's input or environment: shown without a traceback, exit code 2."""

    exit_code = 2


class DownloadError(HarnessError):
    """A corpus could not be downloaded or failed verification."""
