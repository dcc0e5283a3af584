"""Where a report goes, and how a new one replaces an earlier one without touching anything else.

A report owns only the files it wrote, and lists them in ``.harness-report`` in its folder; a new report
replaces exactly those and leaves every other file where it is. A folder that holds files no report wrote
is refused before any work rather than cleared. A folder without the list is taken as a report's own
only when it holds nothing but what a report writes (a report written before the list existed).

Every write goes first into a staging folder inside the report's folder; only a finished report is moved
into place, so that a full disk or any other failure leaves the earlier report whole.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
from pathlib import Path

from harness.errors import WRITE_ERRNOS, HarnessError
from harness.report.captions import FIGURES
from harness.results.atomic import write_text_atomic

MARKER = ".harness-report"
STAGE_PREFIX = ".report-"
# What a report may own: a marker line naming anything else is ignored, never deleted.
REPORT_FILE = re.compile(r"index\.(md|html)|figures/[A-Za-z0-9_][A-Za-z0-9_.-]*\.(png|svg)")
# The files of a report written before the marker existed, recognised by name.
UNMARKED_FILE = re.compile(r"index\.(md|html)|figures/(forest_\d+|" + "|".join(FIGURES) + r")\.png")
UNMARKED_TITLE = "# Report: "
# Failures of the file system (full, read-only, refused, a bad path) rather than of the program: those of
# every write, and a file or folder in the way of the report's own when it is moved into place.
WRITE_ERRORS = WRITE_ERRNOS | {errno.EISDIR, errno.EEXIST}


def default_out_dir(run_dir) -> Path:
    """Where a run's report goes unless told otherwise: beside the run. A run folder in a folder named
    ``results`` (where `harness run` puts runs by default) gets ``report/<run folder name>`` beside that
    ``results`` folder (``results/quick-x`` -> ``report/quick-x``); any other run folder gets
    ``<run folder>-report`` beside itself (``/tmp/x/run`` -> ``/tmp/x/run-report``). Relative when
    ``run_dir`` is and the report lies under the current folder."""
    given = Path(run_dir)
    folder = given.resolve()
    if folder.parent.name == "results":
        out = folder.parent.parent / "report" / folder.name
    else:
        out = folder.with_name(f"{folder.name}-report")
    if not given.is_absolute():
        with contextlib.suppress(ValueError):
            return out.relative_to(Path.cwd().resolve())
    return out


def owned_files(out: Path) -> set[str]:
    """The files of ``out`` that a report wrote ('/'-separated paths relative to ``out``): those its marker
    lists, or all of them in a folder without a marker that holds nothing but an earlier report. HarnessError
    (one line) when ``out`` is not a folder or holds other files and no marker: the report would mix with
    them, and must not delete or overwrite them."""
    out = Path(out)
    if not out.exists():
        return set()
    if not out.is_dir():
        raise HarnessError(f"report folder {out}: exists and is not a folder")
    marker = out / MARKER
    if marker.is_file():
        lines = marker.read_text(encoding="utf-8", errors="replace").splitlines()
        return {line for line in lines if REPORT_FILE.fullmatch(line)}
    found, foreign = [], []
    for root, dirs, files in os.walk(out):
        here = Path(root).relative_to(out)
        if here == Path("."):
            dirs[:] = [d for d in dirs if not d.startswith(STAGE_PREFIX)]  # another report being written
            foreign += [d + "/" for d in dirs if d != "figures"]
            dirs[:] = [d for d in dirs if d == "figures"]
        else:
            foreign += [f"{here.as_posix()}/{d}/" for d in dirs]
            dirs[:] = []
        for name in files:
            path = name if here == Path(".") else f"{here.as_posix()}/{name}"
            (found if UNMARKED_FILE.fullmatch(path) else foreign).append(path)
    if found and not foreign and not _is_report_index(out / "index.md"):
        foreign.append("index.md")
    if foreign:
        shown = ", ".join(sorted(foreign)[:3]) + (", ..." if len(foreign) > 3 else "")
        raise HarnessError(f"report folder {out}: holds files no report wrote ({shown}); name a new or empty "
                           "folder, or one a report was written to")
    return set(found)


def _is_report_index(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read(len(UNMARKED_TITLE)) == UNMARKED_TITLE
    except OSError:
        return False


def publish_report(stage: Path, out: Path) -> None:
    """Put a finished report (``stage``: figures/, index.md, index.html) in place of the one in ``out``: the
    files the earlier report wrote and this one does not are deleted (a figure this run cannot draw must not
    survive from an earlier report); no other file of ``out`` is touched."""
    owned = owned_files(out)
    new = sorted(p.relative_to(stage).as_posix() for p in stage.rglob("*") if p.is_file())
    clash = [name for name in new if name not in owned and os.path.lexists(out / name)]
    if clash:
        raise HarnessError(f"report folder {out}: {clash[0]} was not written by a report and would be replaced; "
                           "move it away or name another folder")
    if os.path.lexists(out / "figures") and not (out / "figures").is_dir():
        raise HarnessError(f"report folder {out}: figures exists and is not a folder")
    # Listed before anything moves: a publish cut short leaves every file it may have placed owned.
    write_marker(out, owned | set(new))
    (out / "figures").mkdir(exist_ok=True)
    for name in sorted(new, key=lambda n: n.startswith("index.")):  # the pages last, after their figures
        os.replace(stage / name, out / name)
    for name in sorted(owned - set(new)):
        with contextlib.suppress(FileNotFoundError):
            (out / name).unlink()
    write_marker(out, set(new))


def write_marker(out: Path, names: set[str]) -> None:
    write_text_atomic(out / MARKER, "".join(f"{name}\n" for name in sorted(names)))


@contextlib.contextmanager
def report_writes(out: Path, stage: Path | None = None):
    """Turn a failure of the file system while the report is written (disk full, read-only, permission,
    a path too long or through a file) into HarnessError naming the path; the staging folder's paths are
    named as the report folder's. Other errors (and failures to read the run) pass unchanged."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in WRITE_ERRORS or not _under(exc.filename, out):
            raise
        where = Path(os.fsdecode(exc.filename)) if exc.filename else out
        if stage is not None and Path(stage).resolve() in where.resolve().parents:
            where = out / where.resolve().relative_to(Path(stage).resolve())
        raise HarnessError(f"report folder {out}: cannot write {where}: {exc.strerror or exc}") from None


def _under(path, folder: Path) -> bool:
    """Whether ``path`` lies in ``folder`` (or is it, or one of the folders above it, which the report creates);
    a failed write reports no path at all when the file was already open."""
    if path is None:
        return True
    try:
        path, folder = Path(os.fsdecode(path)).resolve(), Path(folder).resolve()
    except (OSError, ValueError):
        return False
    return path == folder or folder in path.parents or path in folder.parents


def remove_created(created: list[Path]) -> None:
    """Remove the folders the report created (deepest first) where they are still empty."""
    for folder in created:
        try:
            folder.rmdir()
        except OSError:
            break


def clear_stage(stage: Path | None) -> None:
    if stage is not None:
        shutil.rmtree(stage, ignore_errors=True)
