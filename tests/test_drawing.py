"""Figures drawn in forked workers beside the claims' evaluation: the same files as drawn in place, and a
worker's error raised where the figures are collected."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from harness.report.drawing import FigureDrawer, drawing_workers


def square(path: Path, side: float) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(side, side))
    fig.subplots().plot([0, 1, 2], [0, 1, 4])
    fig.savefig(path, dpi=50)
    return path


def nothing(path: Path) -> None:
    return None


def full_disk(path: Path) -> Path:
    raise OSError(errno.ENOSPC, "No space left on device", str(path))


@pytest.mark.parametrize("workers", [0, 2])
def test_figures_come_back_by_name_in_the_order_asked(tmp_path, workers):
    with FigureDrawer(workers) as drawer:
        drawer.draw("b", square, tmp_path / "b.png", 2.0)
        drawer.draw("none", nothing, tmp_path / "none.png")
        drawer.draw("a", square, tmp_path / "a.png", 3.0)
        paths = drawer.paths()
    assert list(paths) == ["b", "none", "a"]
    assert paths == {"b": tmp_path / "b.png", "none": None, "a": tmp_path / "a.png"}
    assert (tmp_path / "a.png").stat().st_size > (tmp_path / "b.png").stat().st_size > 0


def test_a_worker_draws_what_the_main_process_draws(tmp_path):
    for workers in (0, 2):
        with FigureDrawer(workers) as drawer:
            drawer.draw("a", square, tmp_path / f"{workers}.png", 2.0)
            drawer.paths()
    assert (tmp_path / "0.png").read_bytes() == (tmp_path / "2.png").read_bytes()


@pytest.mark.parametrize("workers", [0, 2])
def test_a_workers_error_is_raised_when_figures_are_collected(tmp_path, workers):
    with pytest.raises(OSError) as caught, FigureDrawer(workers) as drawer:
        drawer.draw("a", full_disk, tmp_path / "a.png")
        drawer.paths()
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(tmp_path / "a.png")


def loaded(path: Path, module: str) -> bool:
    import sys

    return module in sys.modules


def test_workers_import_the_preloaded_modules_as_they_start(tmp_path):
    import sys

    if "wave" in sys.modules:
        pytest.skip("the module that shows the preload is imported here already")
    with FigureDrawer(2, preload=("wave",)) as drawer:
        drawer.draw("wave", loaded, tmp_path, "wave")
        assert drawer.paths() == {"wave": True}
    with FigureDrawer(2) as drawer:
        drawer.draw("wave", loaded, tmp_path, "wave")
        assert drawer.paths() == {"wave": False}  # without the preload, nothing imports it
    assert "wave" not in sys.modules  # the workers imported it, not this process


def test_workers_follow_the_cpus_this_process_may_use(monkeypatch):
    import os

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert drawing_workers() == 0  # one CPU: drawn in place
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert drawing_workers() == 4


def crash(path: Path) -> Path:
    import os
    import signal

    os.kill(os.getpid(), signal.SIGKILL)
    return path


def test_a_worker_that_dies_is_an_error_not_a_wait(tmp_path):
    with pytest.raises(RuntimeError, match="exit code -9"), FigureDrawer(2) as drawer:
        drawer.draw("a", square, tmp_path / "a.png", 2.0)
        drawer.draw("crash", crash, tmp_path / "crash.png")
        drawer.paths()


def test_the_workers_end_with_the_process_that_asked_for_the_figures(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    # A process that starts the drawing and is killed without leaving the drawer: its workers must not stay.
    script = ("import os, sys, time\n"
              "from harness.report.drawing import FigureDrawer\n"
              "drawer = FigureDrawer(2).__enter__()\n"
              "print(drawer._host.pid, flush=True)\n"
              "time.sleep(60)\n")
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    host = int(child.stdout.readline())
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    for _ in range(200):
        if not _living_in_group(host):
            break
        time.sleep(0.05)
    assert not _living_in_group(host)


def test_an_error_as_the_drawing_starts_stops_it_at_once():
    # Bad input is found before any figure is asked for, while the drawing process may not have started yet.
    for _ in range(5):
        with pytest.raises(KeyError), FigureDrawer(2) as drawer:
            host = drawer._host.pid
            raise KeyError("bad input")
        assert not _living_in_group(host)


def _living_in_group(group: int) -> list[int]:
    """The processes of a process group that have not ended (a zombie has; its reaping is not ours to wait for)."""
    from pathlib import Path

    if not Path("/proc/self/stat").exists():
        pytest.skip("no /proc to read process groups from")
    living = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        state, pgrp = fields[0], int(fields[2])
        if pgrp == group and state not in ("Z", "X"):
            living.append(int(stat.parent.name))
    return living
