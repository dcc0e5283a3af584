"""The malloc settings of the processes that train cells (``harness run``'s workers, ``harness ab``'s).

glibc's malloc is told to keep the memory an epoch frees (mallopt(3): the largest mmap threshold of a
64-bit system, and no trimming), so that the next epoch reuses it instead of faulting it in again. By
default it hands large buffers back to the kernel every step: measured here (docs/regression.md,
docs/performance.md) that cost about a fifth of an epoch and made two processes of the same code differ by
5-20% for seconds at a time. glibc reads these variables when a process starts, so they are set in the
environment the workers are started with; values already in the environment win.
"""

from __future__ import annotations

import os

KEEP_FREED_MEMORY = {"MALLOC_MMAP_THRESHOLD_": str(32 * 2**20), "MALLOC_TRIM_THRESHOLD_": str(16 * 2**30)}
KEPT, SYSTEM = "keep-freed", "system"


def malloc_settings(system_malloc: bool, environ=None) -> dict:
    """The malloc variables workers start with: those of ``environ`` (this process's environment), and
    unless ``system_malloc`` the rest of ``KEEP_FREED_MEMORY``."""
    environ = os.environ if environ is None else environ
    if system_malloc:
        return {key: environ[key] for key in KEEP_FREED_MEMORY if key in environ}
    return {key: environ.get(key, value) for key, value in KEEP_FREED_MEMORY.items()}


def worker_environment(system_malloc: bool) -> dict:
    """This process's environment for a process that trains cells: unbuffered output, and unless
    ``system_malloc`` the rest of ``KEEP_FREED_MEMORY``."""
    return {**os.environ, **malloc_settings(system_malloc), "PYTHONUNBUFFERED": "1"}


def malloc_label(settings: dict) -> str:
    """One word for a set of malloc variables: ``keep-freed`` (KEEP_FREED_MEMORY), ``system`` (none set),
    or the variables themselves (``K=V,K=V``) when they are something else."""
    ours = {key: settings[key] for key in KEEP_FREED_MEMORY if key in settings}
    if not ours:
        return SYSTEM
    if ours == KEEP_FREED_MEMORY:
        return KEPT
    return ",".join(f"{key}={value}" for key, value in sorted(ours.items()))


def this_process_malloc() -> str:
    """The label of the malloc settings this process was started with."""
    return malloc_label(dict(os.environ))


def run_malloc(run_info: dict | None) -> str:
    """The malloc setting a run folder's run.json records; runs that record none left malloc alone."""
    return (run_info or {}).get("malloc") or SYSTEM
