"""What the hardware can do: the achieved rate of a large float32 matrix product, per device.

A cell's ``flops_utilization`` is its achieved training FLOP/s over this rate (``harness.results.calibration``
reads it back). The product is timed the
way training is timed: warm-up excluded, CUDA synchronised before the clock is read, every sample kept and
the median reported. The rate is for float32 with torch's current settings (on CUDA, TF32 for matrix
products only if ``torch.backends.cuda.matmul.allow_tf32`` is set), so a bf16 cell or a cuDNN kernel that
uses TF32 can exceed 1.
"""

from __future__ import annotations

import contextlib
import statistics
import time

import torch

# A sample should be long compared with the clock and the synchronisation around it: on a GPU a single
# 2048 product takes well under a millisecond, so each sample repeats the product this long at least.
MIN_SAMPLE_SEC = 0.02


def matmul_flops(size: int) -> int:
    """FLOPs of one (size x size) @ (size x size) product: a multiply-add counts 2."""
    return 2 * size**3


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """Run with ``threads`` CPU threads, then restore torch's setting (it is global to the process)."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(device: str = "cpu", threads: int | None = None, size: int = 2048, repeats: int = 7,
                warmup: int = 2) -> dict:
    """Time ``repeats`` samples of a float32 (size x size) product on ``device`` after ``warmup`` untimed
    ones. Returns ``flops_per_sec`` (from the median sample), ``size``, ``samples_sec`` (seconds per
    product, one per sample) and ``threads`` (the CPU threads used; None on CUDA)."""
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    dev = torch.device(device)
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(dev)
    b = torch.randn(size, size, generator=generator).to(dev)
    out = torch.empty(size, size, device=dev)
    with torch_threads(threads):
        used_threads = torch.get_num_threads() if dev.type == "cpu" else None
        inner = 1
        for _ in range(max(1, warmup)):
            _synchronize(dev)
            t0 = time.perf_counter()
            torch.mm(a, b, out=out)
            _synchronize(dev)
            one = time.perf_counter() - t0
        if one < MIN_SAMPLE_SEC:
            inner = max(1, int(MIN_SAMPLE_SEC / max(one, 1e-7)))
        samples = []
        for _ in range(repeats):
            _synchronize(dev)
            t0 = time.perf_counter()
            for _ in range(inner):
                torch.mm(a, b, out=out)
            _synchronize(dev)
            samples.append((time.perf_counter() - t0) / inner)
    return {
        "flops_per_sec": matmul_flops(size) / statistics.median(samples),
        "size": size,
        "samples_sec": samples,
        "threads": used_threads,
    }


def calibrate(devices, threads: int | None = None, size: int = 2048, repeats: int = 7,
              thread_counts=()) -> dict:
    """Calibration for run.json: ``{device: matmul_rate(...)}`` for each distinct device in ``devices``.
    A CUDA device that is not available gets ``flops_per_sec: None`` and a ``reason``.

    ``thread_counts``: the CPU cells' thread settings. When they differ, the CPU entry also holds
    ``by_threads``: {threads used: that rate}, so that a 1-thread cell is measured against what one thread
    can do, not what all can (the top-level rate, at ``threads``, stays for readers that know no more)."""
    result = {}
    for device in dict.fromkeys(devices):
        if device == "cuda" and not torch.cuda.is_available():
            result[device] = {"flops_per_sec": None, "size": size, "samples_sec": [], "threads": None,
                              "reason": "CUDA not available"}
            continue
        result[device] = matmul_rate(device, threads if device == "cpu" else None, size, repeats)
    if "cpu" in result and len(set(thread_counts)) > 1:
        main = result["cpu"]
        by_threads = {str(main["threads"]): main}
        for count in dict.fromkeys(thread_counts):
            rate = main if count == threads else matmul_rate("cpu", count, size, repeats)
            by_threads.setdefault(str(rate["threads"]), rate)
        main["by_threads"] = {key: {k: rate[k] for k in ("flops_per_sec", "samples_sec", "threads")}
                              for key, rate in sorted(by_threads.items(), key=lambda kv: int(kv[0]))}
    return result
