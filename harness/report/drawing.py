"""The report's figures drawn beside its analysis: in forked worker processes while the main process
evaluates the claims, so that a report costs about the longer of the two rather than their sum.

Drawing is CPU-bound matplotlib work (layout, tick labels, rasterising) that shares nothing with the claims'
statistics. When the report starts, one process is forked that imports matplotlib and the drawing code while
the main process reads the run, and then forks the workers, which share what it imported (an import per worker
cost as much CPU as a third of the figures); each figure's tables travel to a worker with the request.
Where ``fork`` does not exist (Windows) or one CPU is all there is, figures are drawn in the main process,
in the order they were asked for. A worker's exception (a full disk while saving a PNG) is raised in the
main process when the figures are collected, as if it had been drawn there.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import signal
from multiprocessing.connection import wait
from multiprocessing.reduction import ForkingPickler
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
        except Exception:  # noqa: BLE001 - the figure's own import raises the same error where it belongs,
            pass  # returned by paths()
    # The modules' objects live as long as the worker: the collector need not walk them at each collection
    # while the figures' artists come and go.
    gc.freeze()


_PENDING = object()


class FigureDrawer:
    """Draws figures asked for by name, in worker processes where it can; ``paths()`` waits for them.

    Use as a context manager: leaving it (also on an error) stops the workers."""

    def __init__(self, workers: int | None = None, preload: tuple[str, ...] = ()):
        """``preload``: modules imported before any figure is drawn (the drawing code, matplotlib): by the
        process the workers are forked from, as soon as it starts, while the main process is still reading
        the run."""
        workers = drawing_workers() if workers is None else workers
        self._drawn: dict[str, object] = {}  # name -> the figure's path, or _PENDING while a worker draws it
        self._host = None
        if workers > 0:
            context = multiprocessing.get_context("fork")
            # A Queue, not a pipe written directly: a request larger than the pipe's buffer would block the
            # main process until a worker is free to read it.
            self._requests = context.Queue()
            self._answers, answers = context.Pipe(duplex=False)
            answering = context.Lock()  # one worker's answer at a time on the pipe
            main_alive, self._main_alive = os.pipe()  # the host sees the main process end when this closes
            self._workers = workers
            self._host = context.Process(target=_host, name="figure drawing",
                                         args=(workers, tuple(preload), self._requests, answers, answering,
                                               main_alive, self._main_alive))
            self._host.start()
            _own_group(self._host.pid)  # here as well as in the host, so that it is so before either goes on
            os.close(main_alive)
            answers.close()

    def draw(self, name: str, target: str | Callable[..., Path | None], *args) -> None:
        """Draw ``target(*args)`` as ``name``: a function, or "module:function" imported by the process that
        draws; it saves a PNG and returns its path, or None without data."""
        if self._host is None:
            self._drawn[name] = draw_target(target, *args)
            return
        self._drawn[name] = _PENDING
        self._requests.put((name, target, args))

    def paths(self) -> dict[str, Path | None]:
        """Name -> the figure's path, or None where the run had no data for it, in the order asked for. The
        first figure (in that order) whose drawing raised raises here."""
        errors = {}
        while any(value is _PENDING for value in self._drawn.values()):
            ready = wait([self._answers, self._host.sentinel])
            if self._answers in ready:
                name, path, error = self._answers.recv()
                if name is None:  # a worker crashed: what it was drawing will not come
                    raise error
                self._drawn[name] = path
                if error is not None:
                    errors[name] = error
            else:
                raise RuntimeError(f"the figures' drawing process ended (exit code {self._host.exitcode}) before "
                                   "drawing every figure")
        for name in self._drawn:
            if name in errors:
                raise errors[name]
        return dict(self._drawn)

    def __enter__(self) -> FigureDrawer:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if self._host is None:
            return
        if exc_type is None:
            for _ in range(self._workers):
                self._requests.put(None)  # each worker's last request
        else:
            self._requests.cancel_join_thread()  # what was not sent yet is not needed
            try:
                os.killpg(self._host.pid, signal.SIGKILL)  # the host and its workers, whatever they are drawing
            except ProcessLookupError:
                pass
        self._host.join()
        self._requests.close()
        self._answers.close()
        os.close(self._main_alive)
        self._host = None


def _host(workers: int, preload: tuple[str, ...], requests, answers, answering, main_alive: int,
          main_end: int) -> None:
    """Import ``preload``, fork the workers, and wait for them; stop them all if the main process ends."""
    os.close(main_end)
    _own_group(os.getpid())  # the main process stops the host and its workers as one
    _preload(preload)
    context = multiprocessing.get_context("fork")
    children = [context.Process(target=_serve, args=(requests, answers, answering), name=f"figure drawing {i + 1}")
                for i in range(workers)]
    for child in children:
        child.start()
    running = {child.sentinel: child for child in children}
    while running:
        for ready in wait([*running, main_alive]):
            if ready == main_alive:  # the main process has ended without stopping the drawing
                os.killpg(0, signal.SIGKILL)
            child = running.pop(ready)
            child.join()
            if child.exitcode != 0:  # a crash, not an exception: what it was drawing never comes back
                _answer(answers, answering, None, None, RuntimeError(
                    f"a figure's drawing process ended with exit code {child.exitcode}"), lock_timeout=1.0)


def _own_group(pid: int) -> None:
    """Make ``pid`` the leader of a process group of its own (a no-op once it is)."""
    try:
        os.setpgid(pid, pid)
    except (ProcessLookupError, PermissionError):  # it has ended already; or it is a leader already
        pass


def _serve(requests, answers, answering) -> None:
    while (request := requests.get()) is not None:
        name, target, args = request
        try:
            path = draw_target(target, *args)
        except BaseException as error:  # noqa: BLE001 - raised in the main process, where it is collected
            _answer(answers, answering, name, None, error)
        else:
            _answer(answers, answering, name, path, None)


def _answer(answers, answering, name: str | None, path: Path | None, error: BaseException | None,
            lock_timeout: float | None = None) -> None:
    """Send one answer to the main process. ``lock_timeout``: for the host's news of a crashed worker, which
    may have died holding the lock; an answer mixed into a cut one still ends the main process's wait, with
    an error."""
    try:
        message = ForkingPickler.dumps((name, path, error))
    except Exception:  # noqa: BLE001 - an exception that cannot be pickled: its type and text
        message = ForkingPickler.dumps((name, path, RuntimeError(f"{type(error).__name__}: {error}")))
    locked = answering.acquire(timeout=lock_timeout) if lock_timeout is not None else answering.acquire()
    try:
        answers.send_bytes(message)
    finally:
        if locked:
            answering.release()
