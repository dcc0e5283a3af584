"""Errors that the command line reports as one line and exit code 2 (bad input)."""


class HarnessError(Exception):
    """A problem with the user's input or environment: shown without a traceback, exit code 2."""

    exit_code = 2


class DownloadError(HarnessError):
    """A corpus could not be downloaded or failed verification."""


def shorten(text: str, width: int = 80) -> str:
    """``text`` cut to at most ``width`` characters: a message quotes what the user wrote, which may be huge."""
    return text if len(text) <= width else text[: width - 3] + "..."


def quote(value, width: int = 80) -> str:
    """``repr(value)``, shortened: containers are abbreviated before they are rendered (reprlib), so a value
    that YAML aliases made enormous costs no more to quote than a small one."""
    import reprlib

    limits = reprlib.Repr()
    limits.maxlevel, limits.maxlist, limits.maxtuple, limits.maxdict = 3, 8, 8, 8
    limits.maxstring = limits.maxother = width
    return shorten(limits.repr(value), width)
