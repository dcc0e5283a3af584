"""A fused CPU implementation of nn.GRU and tanh nn.RNN: the same equations, parameters and results, with
one C++ call per layer and direction for the forward and one for the backward.

On the CPU PyTorch runs nn.LSTM as one oneDNN primitive, but nn.GRU and nn.RNN as a loop of small
autograd operations per time step. Here (``csrc/fused_rnn.cpp``) the input projection, the weight, bias
and input gradients are each one matrix product over all time steps, and each step is one recurrent
matrix product into a preallocated buffer plus the gate arithmetic in one vectorised pass.

``FusedGRU`` and ``FusedRNN`` subclass nn.GRU and nn.RNN: parameter names, initialisation and state_dict
are the parents', so a checkpoint moves freely between them. They take the fused path for float32 CPU
tensors; for any other dtype or device, and under CPU autocast, they call the parent's forward
unchanged. batch_first, dropout between layers, packed sequences and the ReLU RNN are not supported:
they raise instead of running something else.

The extension is compiled on the first fused forward or ``load_extension()`` call (20-40 s; it needs a C++
compiler and ninja) and cached on disk: in torch's extensions directory (``TORCH_EXTENSIONS_DIR``, by
default ~/.cache/torch_extensions), or under ``HARNESS_EXTENSIONS_DIR`` when that is set. If it cannot be
built, ``HarnessError`` says why in one line; there is no silent fallback to the slower implementation.
A cached library is loaded only when its SHA-256 is the one recorded when it was built
(``harness-build.json`` beside it); any other is removed and built again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import sys
import tempfile
import threading
from pathlib import Path

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn.utils.rnn import PackedSequence

from harness.errors import HarnessError

__all__ = ["FUSED_CLASSES", "FusedGRU", "FusedRNN", "load_extension"]

SOURCE = Path(__file__).resolve().parent / "csrc" / "fused_rnn.cpp"
EXTENSIONS_DIR_ENV = "HARNESS_EXTENSIONS_DIR"

_extension = None
_lock = threading.Lock()


def _extension_name(source: Path) -> str:
    """The extension's name, which names its build directory. It holds what the compiled code depends on
    beyond its source and flags (torch checks those): it is built with -march=native for this CPU and
    against this torch and Python, so a build directory shared between machines (a cluster's home
    directory) must not hand one machine's library to another; and the source's path, so that two
    checkouts (or a test's own source) do not take turns rebuilding one another's library."""
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            cpu = next((line for line in f if line.startswith(("flags", "Features"))), cpu)
    except OSError:
        pass
    text = "|".join([platform.machine(), cpu, torch.__version__, sys.version.split()[0], str(source)])
    return "harness_fused_rnn_" + hashlib.sha256(text.encode()).hexdigest()[:10]


def _build_flags() -> tuple[list[str], list[str]]:
    # -fno-trapping-math: lets the gate loops' selects vectorise; it changes no result (nothing reads the
    # floating-point exception flags).
    cflags, ldflags = ["-O3", "-fno-trapping-math"], []
    if sys.platform.startswith("linux"):
        # OpenMP: ATen's parallel_for splits the gate arithmetic over torch's threads only when the
        # extension itself is compiled with it (it then shares torch's OpenMP runtime).
        cflags += ["-march=native", "-fopenmp"]
        ldflags += ["-fopenmp"]
    return cflags, ldflags


def _first_error_line(text: str) -> str:
    """The line of a build log that says what went wrong: the compiler's first error, else the linker's or
    the loader's complaint, else the first line. ninja's own lines and the echoed command are skipped."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith(("[", "FAILED:", "ninja:"))] or lines
    for pattern in (r"\berror\b(?!: ld returned)", r"not found|No such file|cannot find|undefined", r"\berror\b"):
        for line in lines:
            if re.search(pattern, line):
                return line
    return lines[0] if lines else "unknown error"


def _fail(reason: str) -> HarnessError:
    reason = " ".join(reason.split())
    if len(reason) > 300:
        reason = reason[:297] + "..."
    return HarnessError(f"the fused recurrent implementation (impl: fused) could not be built: {reason}")


def _build():
    source = SOURCE
    if not source.is_file():
        raise _fail(f"its source {source} is missing (is harness/cell/csrc/*.cpp installed with the package?)")
    name = _extension_name(source)
    build_directory = _build_directory(name)  # first: a bad folder is found wrong without a compiler
    compiler = os.environ.get("CXX", "c++")
    words = shlex.split(compiler) or ["c++"]
    if shutil.which(words[0]) is None:
        raise _fail(f"no C++ compiler found: {words[0]!r} is not on PATH (install one or set CXX)")
    from torch.utils import cpp_extension

    if not cpp_extension.is_ninja_available():
        raise _fail("ninja is not installed (pip install ninja)")
    _clear_unless_verified(build_directory, name)
    cflags, ldflags = _build_flags()
    try:
        module = cpp_extension.load(name=name, sources=[str(source)], extra_cflags=cflags, extra_ldflags=ldflags,
                                    build_directory=str(build_directory), verbose=False)
    except Exception as exc:  # a compiler error, a linker error, a library that does not load
        message = str(exc)
        # torch prefixes the build log with "Error building extension '<name>':".
        message = re.sub(r"^Error building extension '[^']*':?\s*", "", message)
        raise _fail(_first_error_line(message)) from None
    _record_build(build_directory, Path(module.__file__))
    return module


# Beside the library in its build directory: its file name and SHA-256, written once it is built and loaded.
BUILD_RECORD = "harness-build.json"


def _build_directory(name: str) -> Path:
    """The extension's own build directory, created and writable, or HarnessError naming the variable that
    chose it and the folder."""
    from torch.utils import cpp_extension

    if os.environ.get(EXTENSIONS_DIR_ENV):
        variable, root = EXTENSIONS_DIR_ENV, Path(os.environ[EXTENSIONS_DIR_ENV]).expanduser()
    else:
        variable, root = "TORCH_EXTENSIONS_DIR", Path(cpp_extension.get_default_build_root())
    folder = root / name
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):  # read-only file systems, permissions
            pass
    except OSError as exc:
        raise _fail(f"{variable}={root}: cannot write {folder} ({exc.strerror or exc}); set {EXTENSIONS_DIR_ENV} "
                    "to a folder this process can write to") from None
    return folder


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _clear_unless_verified(folder: Path, name: str) -> None:
    """Empty ``folder`` when it holds a library that is not the one recorded when it was built (cut short by
    a full disk or a killed build, changed since, or built without a record): loading such a file can kill
    the process with a bus error, and ninja, seeing it newer than its sources, would not rebuild it. The
    build that follows starts from nothing."""
    library = folder / f"{name}.so"
    if not library.exists():
        return
    try:
        record = json.loads((folder / BUILD_RECORD).read_text())
        if isinstance(record, dict) and record.get("library") == library.name and record.get("sha256") == _sha256(library):
            return
    except (OSError, ValueError):
        pass
    try:
        for path in folder.iterdir():
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    except OSError as exc:
        raise _fail(f"its cached library {library} is damaged and cannot be removed ({exc.strerror or exc}); "
                    "delete that folder") from None


def _record_build(folder: Path, library: Path) -> None:
    from harness.results.atomic import write_json_atomic

    # Without the record the next process rebuilds it: a cost, never a risk.
    with contextlib.suppress(OSError):
        write_json_atomic(folder / BUILD_RECORD, {"library": library.name, "sha256": _sha256(library)})


def load_extension():
    """The compiled extension, built on the first call (and cached on disk by torch) then kept for the
    process. Raises HarnessError (one line) when it cannot be built."""
    global _extension
    if _extension is None:
        with _lock:
            if _extension is None:
                _extension = _build()
    return _extension


class _Direction(torch.autograd.Function):
    """One layer, one direction over all time steps: (x, h0, weights) -> (output (T, B, H), h_n (B, H))."""

    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b_ih, b_hh, reverse: bool, cell: str):
        ext = load_extension()
        ctx.set_materialize_grads(False)  # an unused h_n or output costs no zero tensor in the backward
        ctx.reverse, ctx.cell = reverse, cell
        if cell == "gru":
            out, h_n, gates, hproj = ext.gru_forward(x, h0, w_ih, w_hh, b_ih, b_hh, reverse)
            ctx.save_for_backward(x, h0, w_ih, w_hh, out, gates, hproj)
        else:
            out, h_n = ext.rnn_tanh_forward(x, h0, w_ih, w_hh, b_ih, b_hh, reverse)
            ctx.save_for_backward(x, h0, w_ih, w_hh, out)
        return out, h_n

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, grad_hn):
        if grad_out is None and grad_hn is None:
            return (None,) * 8
        ext = load_extension()
        x, h0, w_ih, w_hh, out, *saved = ctx.saved_tensors
        needs = tuple(bool(n) for n in ctx.needs_input_grad[:6])  # x, h0, w_ih, w_hh, b_ih, b_hh
        # The extension's flag order: dx, dh0, dw_ih, dw_hh, db_ih, db_hh.
        if ctx.cell == "gru":
            grads = ext.gru_backward(grad_out, grad_hn, x, h0, w_ih, w_hh, out, saved[0], saved[1], ctx.reverse,
                                     *needs)
        else:
            grads = ext.rnn_tanh_backward(grad_out, grad_hn, x, h0, w_ih, w_hh, out, ctx.reverse, *needs)
        dx, dh0, dw_ih, dw_hh, db_ih, db_hh = grads
        return dx, dh0, dw_ih, dw_hh, db_ih, db_hh, None, None


def _autocast_on_cpu() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled()


class _Fused:
    """The forward shared by FusedGRU and FusedRNN; mixed in before the nn.RNNBase subclass."""

    _cell: str

    def _check_supported(self) -> None:
        name = type(self).__name__
        if self.batch_first:
            raise ValueError(f"{name} takes time-major input only: batch_first=True is not supported")
        if self.dropout:
            raise ValueError(f"{name} does not support dropout between layers (dropout={self.dropout})")

    def _fusable(self, input: torch.Tensor, hx) -> bool:
        tensors = [input, *self._flat_weights] + ([hx] if hx is not None else [])
        if any(t is None or t.device.type != "cpu" or t.dtype != torch.float32 for t in tensors):
            return False
        return not _autocast_on_cpu()

    def forward(self, input, hx=None):
        if isinstance(input, PackedSequence):
            raise NotImplementedError(f"{type(self).__name__} does not support packed sequences")
        if not self._fusable(input, hx):
            return super().forward(input, hx)
        if input.dim() not in (2, 3):
            raise ValueError(f"{type(self).__name__}: Expected input to be 2D or 3D, got {input.dim()}D instead")
        batched = input.dim() == 3
        if not batched:
            if hx is not None and hx.dim() != 2:
                raise RuntimeError(f"For unbatched 2-D input, hx should also be 2-D but got {hx.dim()}-D tensor")
            input = input.unsqueeze(1)
            hx = hx.unsqueeze(1) if hx is not None else None
        elif hx is not None and hx.dim() != 3:
            raise RuntimeError(f"For batched 3-D input, hx should also be 3-D but got {hx.dim()}-D tensor")
        directions = 2 if self.bidirectional else 1
        if hx is None:
            hx = torch.zeros(self.num_layers * directions, input.size(1), self.hidden_size, dtype=input.dtype)
        self.check_forward_args(input, hx, None)  # the parent's checks and messages

        x = input
        last_states = []
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(directions):
                index = layer * directions + direction
                weights = [getattr(self, name) for name in self._all_weights[index]]
                w_ih, w_hh = weights[0], weights[1]
                b_ih, b_hh = (weights[2], weights[3]) if self.bias else (None, None)
                out, h_n = _Direction.apply(x.contiguous(), hx[index], w_ih, w_hh, b_ih, b_hh, direction == 1,
                                            self._cell)
                outputs.append(out)
                last_states.append(h_n)
            x = outputs[0] if directions == 1 else torch.cat(outputs, dim=2)
        h_n = torch.stack(last_states, dim=0)
        if not batched:
            return x.squeeze(1), h_n.squeeze(1)
        return x, h_n


class FusedGRU(_Fused, nn.GRU):
    """nn.GRU with a fused CPU float32 forward and backward (one C++ call per layer and direction each).

    Same constructor, parameters, initialisation and state_dict as nn.GRU; ``forward(input, hx=None)``
    returns ``(output, h_n)`` as nn.GRU's. Time-major input only; other dtypes and devices run nn.GRU's
    own forward."""

    _cell = "gru"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._check_supported()


class FusedRNN(_Fused, nn.RNN):
    """nn.RNN (tanh only) with a fused CPU float32 forward and backward; see FusedGRU."""

    _cell = "rnn"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.nonlinearity != "tanh":
            raise ValueError(f"FusedRNN supports nonlinearity='tanh' only, not {self.nonlinearity!r}")
        self._check_supported()


FUSED_CLASSES = {"gru": FusedGRU, "rnn": FusedRNN}
