"""The report's figures drawn beside its analysis: in forked worker processes while the main process
evaluates the claims, so that a report costs about the longer of the two rather than their sum.

Drawing is CPU-bound matplotlib work (layout, tick labels, rasterising) that shares nothing with the claims'
statistics. The workers are forked when the report starts and import matplotlib and the drawing code while the
main process reads the run; each figure's tables travel to its worker with the request.
Where ``fork`` does not exist (Windows) or one CPU is all there is, figures are drawn in the main process,
in the order they were asked for. A worker's exception (a full disk while saving a PNG) is raised in the
main process when the figures are collected, as if it had been drawn there.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Callable

# More workers than this only wait for one another: a report has four to a dozen figures.
MAX_WORKERS = 4


def drawing_workers() -> int:
    """Worker processes for figures: one per CPU this process may use, at most ``MAX_WORKERS`` (the claims'
    evaluation takes a CPU only for the first part of the drawing); 0 on one CPU or where a worker cannot
    be forked, and figures are then drawn in the main process."""
    if "fork" not in multiprocessing.get_all_start_methods():
        return 0
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 0 if cpus < 2 else min(MAX_WORKERS, cpus)


def resolve(target: str | Callable) -> Callable:
    """A drawing function given as "module:function" (imported where it is called: a worker imports
    matplotlib, the main process need not), or the function itself."""
    if callable(target):
        return target
    import importlib

    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def draw_target(target: str | Callable, *args) -> Path | None:
    return resolve(target)(*args)


def _preload(modules: tuple[str, ...]) -> None:
    import importlib

    for module in modules:
        try:
            importlib.import_module(module)
        except Exception:  # noqa: BLE001 - a worker that died here would break the pool; the figure's own import
            pass  # raises the same error where it belongs, returned by paths()
    # The modules' objects live as long as the worker: the collector need not walk them at each collection
    # while the figures' artists come and go.
    gc.freeze()


class FigureDrawer:
    """Draws figures asked for by name, in worker processes where it can; ``paths()`` waits for them.

    Use as a context manager: leaving it (also on an error) stops the workers."""

    def __init__(self, workers: int | None = None, preload: tuple[str, ...] = ()):
        """``preload``: modules each worker imports as it starts (the drawing code, matplotlib), so that they
        are imported while the main process is still reading the run rather than when the first figure is
        asked for; the workers start at once."""
        workers = drawing_workers() if workers is None else workers
        self._pool = (ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                          initializer=_preload, initargs=(tuple(preload),))
                      if workers > 0 else None)
        if self._pool is not None and preload:
            try:
                self._pool.submit(int)  # a fork pool starts all its workers at the first task
            except BaseException:
                self._pool.shutdown(wait=False, cancel_futures=True)
                raise
        self._drawn: dict[str, Future | Path | None] = {}

    def draw(self, name: str, target: str | Callable[..., Path | None], *args) -> None:
        """Draw ``target(*args)`` as ``name``: a function, or "module:function" imported by the process that
        draws; it saves a PNG and returns its path, or None without data."""
        self._drawn[name] = self._pool.submit(draw_target, target, *args) if self._pool else draw_target(target, *args)

    def paths(self) -> dict[str, Path | None]:
        """Name -> the figure's path, or None where the run had no data for it, in the order asked for."""
        return {name: drawn.result() if isinstance(drawn, Future) else drawn for name, drawn in self._drawn.items()}

    def __enter__(self) -> FigureDrawer:
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
