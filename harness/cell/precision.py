"""The arithmetic a cell runs in: bf16 autocast for ``precision: bf16``, and whether this CPU has bf16
instructions of its own."""

from __future__ import annotations

import contextlib

import torch

from harness.spec.config import CellConfig


def autocast(cfg: CellConfig, device: torch.device, cache_enabled: bool = True):
    """bf16 autocast for ``precision: bf16`` (on CPU the model runs its recurrent layers wholly in bf16
    inside it, see ``CharRNN._recurrent_in``). CUDA-graph capture needs ``cache_enabled=False``."""
    if cfg.precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, cache_enabled=cache_enabled)
    return contextlib.nullcontext()


def cpu_has_native_bf16() -> bool | None:
    """Whether oneDNN finds bf16 instructions (AVX512-BF16 or AMX) on this CPU; None if it cannot say."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return None
