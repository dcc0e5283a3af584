"""The arithmetic a cell runs in: bf16 autocast for ``precision: bf16``, and whether this CPU has bf16
instructions of its own. torch is imported inside the functions that need it, so that `harness list` can
warn about bf16 without it."""

from __future__ import annotations

import contextlib

from harness.spec.config import CellConfig

# /proc/cpuinfo flags of the bf16 instructions oneDNN uses: AVX512-BF16 and AMX-BF16.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def autocast(cfg: CellConfig, device, cache_enabled: bool = True):
    """bf16 autocast for ``precision: bf16`` (on CPU the model runs its recurrent layers wholly in bf16
    inside it, see ``CharRNN._recurrent_in``). CUDA-graph capture needs ``cache_enabled=False``."""
    if cfg.precision == "bf16":
        import torch

        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, cache_enabled=cache_enabled)
    return contextlib.nullcontext()


def cpu_has_native_bf16() -> bool | None:
    """Whether oneDNN finds bf16 instructions (AVX512-BF16 or AMX) on this CPU; None if it cannot say."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return None


def cpu_flags_have_bf16(cpuinfo: str | None = None) -> bool | None:
    """Whether the CPU lists native bf16 instructions (``NATIVE_BF16_FLAGS``) in /proc/cpuinfo, without
    torch; None where there are no flags to read (not Linux, or not x86)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            return None
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), None)
    if flags is None:
        return None
    return any(flag in flags for flag in NATIVE_BF16_FLAGS)


def bf16_warning(configs, native: bool | None = None) -> str:
    """A line for the plan when CPU cells train in bf16 on a CPU without native bf16, where bf16 is
    emulated and many times slower than fp32; "" otherwise. ``native``: the CPU's answer, default
    ``cpu_flags_have_bf16()``."""
    count = sum(1 for cfg in configs if cfg.device == "cpu" and cfg.precision == "bf16")
    if not count:
        return ""
    if native is None:
        native = cpu_flags_have_bf16()
    if native is not False:  # native, or nothing to tell by
        return ""
    cells = "1 CPU cell trains" if count == 1 else f"{count} CPU cells train"
    return (f"warning: {cells} in bf16 (train.precision: bf16), but this CPU has no native bf16 (AVX512-BF16 or "
            "AMX): bf16 is emulated there and many times slower than fp32; see docs/performance.md")
