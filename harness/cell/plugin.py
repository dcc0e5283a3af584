"""A user's own recurrent module as a cell type: ``model.cell: "package.module:factory"``.

The factory is called as ``factory(input_size, hidden_size, num_layers, bidirectional=...)`` and returns an
``nn.Module`` whose ``forward(x, state=None)`` takes time-major input of shape (steps, batch, input_size)
and returns ``(output, state)``, output of shape (steps, batch, directions * hidden_size): the interface
``nn.GRU`` has. ``state`` is whatever the module returns (a tensor or a tuple of tensors); the training
loop detaches it between batches and hands it back. The module is imported where the cell trains (its
folder on ``PYTHONPATH`` or the working folder); its source file's SHA-256 is kept in the cell's record.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import sys

from harness.errors import HarnessError
from harness.spec.config import BUILT_IN_CELLS

INTERFACE = "factory(input_size, hidden_size, num_layers, bidirectional=False)"


def is_plugin(cell: str) -> bool:
    return cell not in BUILT_IN_CELLS


def load_factory(spec: str):
    """The factory ``spec`` names, checked to accept the interface's arguments; one-line HarnessError else."""
    module_name, _, attribute = spec.partition(":")
    where = f"model.cell = {spec!r}"
    if "" not in sys.path and "." not in sys.path:
        sys.path.append("")  # the working folder, as `python -m` has it, for a module beside the suite
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise HarnessError(f"{where}: no module named {exc.name!r} (is its folder on PYTHONPATH?)") from None
    except Exception as exc:  # the user's module failed while importing: say how, in one line
        raise HarnessError(f"{where}: importing {module_name} failed: {type(exc).__name__}: {exc}") from None
    factory = getattr(module, attribute, None)
    if factory is None:
        raise HarnessError(f"{where}: module {module_name} has no attribute {attribute!r}")
    if not callable(factory):
        raise HarnessError(f"{where}: {attribute} is not callable; expected {INTERFACE}")
    try:
        inspect.signature(factory).bind(1, 1, 1, bidirectional=False)
    except TypeError as exc:
        raise HarnessError(f"{where}: {attribute} does not take the arguments {INTERFACE} ({exc})") from None
    except ValueError:
        pass  # no signature to inspect (a builtin): calling it will tell
    return factory


def build_module(spec: str, input_size: int, hidden: int, layers: int, bidirectional: bool):
    """The user's recurrent module for one cell, checked to be an nn.Module."""
    from torch import nn

    module = load_factory(spec)(input_size, hidden, layers, bidirectional=bidirectional)
    if not isinstance(module, nn.Module):
        raise HarnessError(f"model.cell = {spec!r}: the factory returned {type(module).__name__}, not an nn.Module")
    return module


def source_sha256(spec: str) -> str | None:
    """SHA-256 of the factory's module file, or None where it has none (a built-in module)."""
    module = sys.modules.get(spec.partition(":")[0])
    path = getattr(module, "__file__", None)
    if not path:
        return None
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()
