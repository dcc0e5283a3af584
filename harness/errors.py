"""Errors that the command line reports as one line and exit code 2 (bad input)."""

import errno
import os


class HarnessError(Exception):
    """A problem with the user's input or environment: shown without a traceback, exit code 2."""

    exit_code = 2


class DownloadError(HarnessError):
    """A corpus could not be downloaded or failed verification."""


# What the machine says of a place to write that no retry fixes: the user must free space, or name
# another path. Any other OSError is a bug and keeps its traceback.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.ENAMETOOLONG, errno.EROFS, errno.ENOTDIR,
                          errno.EACCES, errno.EPERM})


class WriteError(HarnessError, OSError):
    """A file could not be written for one of ``WRITE_ERRNOS``: one line naming the path and why. Also an
    OSError (with its ``errno`` and ``filename``), so that code that tolerates a failed write still does."""

    def __init__(self, path, error: OSError):
        # ``path``, not the file the system named: that may be the temporary file of an atomic write.
        super().__init__(f"cannot write {path}: {os_error_reason(error)} (nothing was left half-written)")
        self.errno, self.strerror, self.filename = error.errno, error.strerror, str(path)

    def __str__(self) -> str:  # the line above, not OSError's "[Errno N] ...: 'path'"
        return str(self.args[0])


def is_write_error(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in WRITE_ERRNOS


def os_error_reason(error: OSError) -> str:
    """What the system says is wrong, without Python's "[Errno N]"."""
    return error.strerror or (os.strerror(error.errno) if error.errno else str(error))


def os_error_line(error: OSError) -> str:
    """``PATH: what is wrong`` for an OSError that names a path (both, for a rename), else what is wrong."""
    where = " -> ".join(str(f) for f in (error.filename, error.filename2) if f is not None)
    return f"{where}: {os_error_reason(error)}" if where else os_error_reason(error)


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
