"""What machine and software produced a number: recorded with every cell and every run."""

from __future__ import annotations

import os
import platform
import socket
import sys
from functools import lru_cache

import psutil


@lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_name() -> str | None:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return None


def versions() -> dict:
    import torch

    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": cudnn,
    }


# The runtime dependencies (pyproject.toml's) and the optional ones that change how a run goes, for a
# checkout that is not installed; an installed project lists its own requirements.
DEPENDENCIES = ("numpy", "pandas", "matplotlib", "seaborn", "tabulate", "requests", "PyYAML", "pydantic",
                "scipy", "tqdm", "psutil", "ruptures")
OPTIONAL_DEPENDENCIES = ("ray", "tensorboard", "ninja")


def package_versions() -> dict[str, str | None]:
    """The installed version of every runtime dependency and of the optional ones (None: not installed)."""
    import importlib.metadata as metadata
    import re

    names = list(DEPENDENCIES)
    try:
        required = metadata.requires("rnn-harness") or []
        names = [re.match(r"[A-Za-z0-9_.-]+", r).group(0) for r in required if "extra ==" not in r]
        names = [n for n in names if n.lower() != "torch"]  # recorded on its own, with cuda and cudnn
    except metadata.PackageNotFoundError:
        pass
    versions = {}
    for name in sorted(set(names) | set(OPTIONAL_DEPENDENCIES), key=str.lower):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def describe() -> dict:
    """Host, processor, accelerator and versions, as plain JSON-able values."""
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_bytes": psutil.virtual_memory().total,
        "gpu_name": gpu_name(),
        "executable": sys.executable,
        **versions(),
        "packages": package_versions(),
    }


def machine_id(info: dict | None = None) -> str:
    """A short, file-name-safe identity of a machine: processor model and accelerator (not the hostname,
    so identical machines share baselines)."""
    import re

    info = info or describe()
    parts = [info.get("cpu_model") or "cpu", info.get("gpu_name") or "nogpu"]
    slug = re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")
    return slug[:80]


class PeakMemory:
    """Peak memory over chosen regions of code (the training epochs, not the evaluations between them).

    CUDA: ``max_memory_allocated`` after ``reset_peak_memory_stats`` at each region's start.
    CPU: the process's resident set. Linux resets the kernel's high-water mark (VmHWM) when 5 is written
    to /proc/self/clear_refs, so each region's peak is its own (``exact`` is False where that fails and
    the lifetime peak is all there is); ``release()`` hands memory freed by an evaluation back to the
    system so that it does not count in the next region."""

    def __init__(self, device):
        import torch

        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.before = psutil.Process().memory_info().rss
        self.peak = self.before
        self.peak_cuda = 0
        self.exact = True
        self.carried = 0  # the increase an earlier process of the same cell measured (a checkpoint's)

    def start_region(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            self.exact = False

    def end_region(self) -> None:
        if self.cuda:
            import torch

            self.peak_cuda = max(self.peak_cuda, torch.cuda.max_memory_allocated(self.device))
            return
        self.peak = max(self.peak, _vm_hwm(), psutil.Process().memory_info().rss)

    def release(self) -> None:
        if self.cuda:
            return
        try:
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass

    @property
    def increase(self) -> int:
        """The figure reported as ``peak_mem_bytes``: this process's, or an earlier one's if larger."""
        if self.cuda:
            return max(self.carried, self.peak_cuda)
        return max(self.carried, self.peak - self.before)

    def carried_state(self) -> dict:
        """What a later process of the same cell takes over (``carry_over``)."""
        return {"increase": self.increase, "exact": self.exact}

    def carry_over(self, increase: int, exact: bool) -> None:
        self.carried = increase
        self.exact = self.exact and exact


def _vm_hwm() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
